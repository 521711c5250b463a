/* inetsk: TCP and UDP sockets on loopback set up before a dump and checked after the
 * restore. One state per run, chosen by argv[1], at port argv[2]:
 *
 *   tcp4   a TCP socket listening at 127.0.0.1:PORT (backlog 7) with SO_REUSEADDR,
 *          SO_KEEPALIVE, TCP_NODELAY and TCP_KEEPIDLE 99 set
 *   tcp6   a TCP socket listening at [::1]:PORT with IPV6_V6ONLY and SO_REUSEPORT set
 *   udp4   a UDP socket bound at 127.0.0.1:PORT (SO_BROADCAST, IP_TOS 0x10) and a second
 *          one bound at 127.0.0.1 and connected to the first
 *   udp6   the same at [::1] (IPV6_V6ONLY on the bound one)
 *
 * The program prints "ready pid=N". On SIGUSR1 (sent after the restore) it checks its
 * sockets (addresses, state, options; the UDP pair exchanges a datagram each way) and
 * prints "ok" or "FAIL: why"; then it serves: a listener answers every client with
 * "hello\n" and closes, the bound UDP socket answers every datagram with "echo:" and
 * the datagram. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int sig) { go = 1; }
static char why[256];

#define CHECK(cond, ...)                                      \
	do {                                                  \
		if (!(cond) && !why[0])                       \
			snprintf(why, sizeof(why), __VA_ARGS__); \
	} while (0)

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, level, name, &v, &l))
		return -1;
	return v;
}

static void seti(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof(v))) {
		perror("setsockopt");
		exit(1);
	}
}

static socklen_t addr(struct sockaddr_storage *ss, int v6, int port)
{
	memset(ss, 0, sizeof(*ss));
	if (v6) {
		struct sockaddr_in6 *a = (void *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		return sizeof(*a);
	}
	struct sockaddr_in *a = (void *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons(port);
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sizeof(*a);
}

static int port_of(struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)ss)->sin_port);
}

/* bound_at checks that fd is bound at loopback:port (any port if port < 0). */
static void bound_at(const char *what, int fd, int v6, int port)
{
	struct sockaddr_storage ss, want;
	socklen_t l = sizeof(ss), wl = addr(&want, v6, 0);
	CHECK(!getsockname(fd, (void *)&ss, &l), "%s: getsockname: %s", what, strerror(errno));
	if (port >= 0)
		CHECK(port_of(&ss) == port, "%s: bound at port %d, want %d", what, port_of(&ss), port);
	CHECK(port_of(&ss) != 0, "%s: not bound", what);
	if (v6)
		CHECK(!memcmp(&((struct sockaddr_in6 *)&ss)->sin6_addr, &in6addr_loopback, 16), "%s: not at ::1", what);
	else
		CHECK(((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_LOOPBACK), "%s: not at 127.0.0.1", what);
	(void)wl;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: inetsk tcp4|tcp6|udp4|udp6 PORT\n");
		return 2;
	}
	const char *mode = argv[1];
	int port = atoi(argv[2]), v6 = mode[3] == '6', tcp = mode[0] == 't';
	int fam = v6 ? AF_INET6 : AF_INET;
	struct sockaddr_storage ss;
	socklen_t sl = addr(&ss, v6, port);
	int s = socket(fam, tcp ? SOCK_STREAM : SOCK_DGRAM, 0), c = -1;
	if (tcp && !v6) {
		seti(s, SOL_SOCKET, SO_REUSEADDR, 1);
		seti(s, SOL_SOCKET, SO_KEEPALIVE, 1);
		seti(s, IPPROTO_TCP, TCP_NODELAY, 1);
		seti(s, IPPROTO_TCP, TCP_KEEPIDLE, 99);
	} else if (tcp) {
		seti(s, IPPROTO_IPV6, IPV6_V6ONLY, 1);
		seti(s, SOL_SOCKET, SO_REUSEPORT, 1);
	} else if (!v6) {
		seti(s, SOL_SOCKET, SO_BROADCAST, 1);
		seti(s, IPPROTO_IP, IP_TOS, 0x10);
	} else {
		seti(s, IPPROTO_IPV6, IPV6_V6ONLY, 1);
	}
	if (bind(s, (void *)&ss, sl)) {
		perror("bind");
		return 1;
	}
	if (tcp && listen(s, 7)) {
		perror("listen");
		return 1;
	}
	if (!tcp) {
		struct sockaddr_storage any;
		socklen_t al = addr(&any, v6, 0);
		c = socket(fam, SOCK_DGRAM, 0);
		if (bind(c, (void *)&any, al) || connect(c, (void *)&ss, sl)) {
			perror("connect");
			return 1;
		}
	}
	signal(SIGUSR1, on_usr1);
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	for (;;) {
		if (go == 1) {
			go = 2;
			bound_at("the listening or bound socket", s, v6, port);
			if (tcp) {
				CHECK(opt(s, SOL_SOCKET, SO_ACCEPTCONN) == 1, "not listening");
				if (!v6) {
					CHECK(opt(s, SOL_SOCKET, SO_REUSEADDR) == 1, "SO_REUSEADDR off");
					CHECK(opt(s, SOL_SOCKET, SO_REUSEPORT) == 0, "SO_REUSEPORT on");
					CHECK(opt(s, SOL_SOCKET, SO_KEEPALIVE) == 1, "SO_KEEPALIVE off");
					CHECK(opt(s, IPPROTO_TCP, TCP_NODELAY) == 1, "TCP_NODELAY off");
					CHECK(opt(s, IPPROTO_TCP, TCP_KEEPIDLE) == 99, "TCP_KEEPIDLE %d", opt(s, IPPROTO_TCP, TCP_KEEPIDLE));
				} else {
					CHECK(opt(s, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY off");
					CHECK(opt(s, SOL_SOCKET, SO_REUSEPORT) == 1, "SO_REUSEPORT off");
					CHECK(opt(s, SOL_SOCKET, SO_REUSEADDR) == 0, "SO_REUSEADDR on");
				}
				struct tcp_info ti;
				socklen_t tl = sizeof(ti);
				CHECK(!getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &tl) && ti.tcpi_sacked == 7, "backlog %u, want 7", ti.tcpi_sacked);
			} else {
				if (!v6) {
					CHECK(opt(s, SOL_SOCKET, SO_BROADCAST) == 1, "SO_BROADCAST off");
					CHECK(opt(s, IPPROTO_IP, IP_TOS) == 0x10, "IP_TOS %#x", opt(s, IPPROTO_IP, IP_TOS));
				} else {
					CHECK(opt(s, IPPROTO_IPV6, IPV6_V6ONLY) == 1, "IPV6_V6ONLY off");
				}
				bound_at("the connected socket", c, v6, -1);
				struct sockaddr_storage peer, from;
				socklen_t pl = sizeof(peer), fl = sizeof(from);
				CHECK(!getpeername(c, (void *)&peer, &pl) && port_of(&peer) == port, "the connected socket's peer is not port %d", port);
				char buf[64] = {0};
				CHECK(send(c, "ping", 4, 0) == 4, "send: %s", strerror(errno));
				struct pollfd p = {s, POLLIN, 0};
				CHECK(poll(&p, 1, 2000) == 1, "no datagram came");
				CHECK(recvfrom(s, buf, sizeof(buf), MSG_DONTWAIT, (void *)&from, &fl) == 4 && !memcmp(buf, "ping", 4), "received %s", buf);
				CHECK(sendto(s, "pong", 4, 0, (void *)&from, fl) == 4, "sendto: %s", strerror(errno));
				p.fd = c;
				CHECK(poll(&p, 1, 2000) == 1, "no answer came");
				memset(buf, 0, sizeof(buf));
				CHECK(recv(c, buf, sizeof(buf), MSG_DONTWAIT) == 4 && !memcmp(buf, "pong", 4), "answer %s", buf);
			}
			if (why[0])
				printf("FAIL: %s\n", why);
			else
				printf("ok\n");
			fflush(stdout);
		}
		struct pollfd p = {s, POLLIN, 0};
		if (go != 2 || poll(&p, 1, 20) != 1) {
			if (go != 2)
				usleep(20000);
			continue;
		}
		if (tcp) {
			int a = accept(s, NULL, NULL);
			if (a >= 0) {
				char buf[256];
				ssize_t n = read(a, buf, sizeof(buf));
				(void)n;
				if (write(a, "hello\n", 6) != 6)
					perror("write");
				close(a);
			}
		} else {
			char buf[256] = "echo:";
			struct sockaddr_storage from;
			socklen_t fl = sizeof(from);
			ssize_t n = recvfrom(s, buf + 5, sizeof(buf) - 5, MSG_DONTWAIT, (void *)&from, &fl);
			if (n >= 0)
				sendto(s, buf, n + 5, 0, (void *)&from, fl);
		}
	}
}

/* tcphalf: one process holding both ends of a half-closed loopback TCP connection, a the
 * client and b the accepted end, at 127.0.0.1:PORT (argv[3] "6": [::1]). argv[1]:
 *
 *   finwait2  a sent "a-data" and shut its sending side (its FIN acknowledged: FIN_WAIT2);
 *             b sent "b-data" and read nothing (CLOSE_WAIT): each holds the other's bytes
 *   finwait1  a sent 1 MiB of a pattern (more than b's receive buffer and a's send
 *             buffer hold: b's window closed) and shut its sending side: its FIN waits
 *             behind the bytes b cannot take yet (FIN_WAIT1); b read nothing (ESTABLISHED)
 *
 * argv[2] is the port. The program prints "ready pid=N" and waits. On SIGUSR1 (after a
 * restore) it checks the states, then that everything comes as it was sent: b reads all
 * of a's bytes and then the end of the stream, a reads b's; b can still send ("more"),
 * which a reads, and once b shuts its side too a sees the end of the stream. It prints
 * "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BIG (1 << 20)

static volatile sig_atomic_t go;
static void on_usr1(int sig) { go = 1; }
static char why[256];

#define CHECK(cond, ...)                                      \
	do {                                                  \
		if (!(cond) && !why[0])                       \
			snprintf(why, sizeof(why), __VA_ARGS__); \
	} while (0)

static int state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
		return -1;
	return ti.tcpi_state;
}

/* readall reads from fd until the end of the stream (or 5 s pass), into buf (n at most);
 * it returns the bytes read, or -1 if the end did not come. */
static ssize_t readall(int fd, char *buf, size_t n)
{
	size_t got = 0;
	for (int i = 0; i < 500; i++) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 10) != 1)
			continue;
		ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
		if (r == 0)
			return got;
		if (r < 0 && errno != EAGAIN)
			return -1;
		if (r > 0)
			got += r;
		if (got == n)
			return -1;
	}
	return -1;
}

/* readn reads exactly n bytes from fd within 5 s. */
static int readn(int fd, char *buf, size_t n)
{
	size_t got = 0;
	for (int i = 0; i < 500 && got < n; i++) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 10) != 1)
			continue;
		ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
		if (r <= 0 && !(r < 0 && errno == EAGAIN))
			return -1;
		if (r > 0)
			got += r;
	}
	return got == n ? 0 : -1;
}

static char pattern(size_t i) { return 'a' + (i * 7 + i / 4096) % 26; }

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: tcphalf finwait1|finwait2 PORT [6]\n");
		return 2;
	}
	int fin1 = !strcmp(argv[1], "finwait1"), v6 = argc > 3 && !strcmp(argv[3], "6"), one = 1, small = 8192;
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (v6) {
		struct sockaddr_in6 *s6 = (void *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(atoi(argv[2]));
		s6->sin6_addr = in6addr_loopback;
		sl = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (void *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons(atoi(argv[2]));
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*s4);
	}
	int ls = socket(ss.ss_family, SOCK_STREAM, 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(ls, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)); /* b's */
	if (bind(ls, (void *)&ss, sl) || listen(ls, 1)) {
		perror("listen");
		return 1;
	}
	int a = socket(ss.ss_family, SOCK_STREAM, 0);
	setsockopt(a, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	if (connect(a, (void *)&ss, sl)) {
		perror("connect");
		return 1;
	}
	int b = accept(ls, NULL, NULL);
	close(ls);
	static char big[BIG], in[BIG + 1];
	size_t sent = 0;
	if (fin1) {
		for (size_t i = 0; i < BIG; i++)
			big[i] = pattern(i);
		fcntl(a, F_SETFL, O_NONBLOCK);
		while (sent < BIG) {
			ssize_t n = send(a, big + sent, BIG - sent, 0);
			if (n < 0)
				break;
			sent += n;
		}
		usleep(100000);
	} else {
		if (send(a, "a-data", 6, 0) != 6 || send(b, "b-data", 6, 0) != 6) {
			perror("send");
			return 1;
		}
	}
	shutdown(a, SHUT_WR);
	usleep(100000);
	signal(SIGUSR1, on_usr1);
	printf("ready pid=%d a=%d b=%d states %d %d sent %zu\n", getpid(), state(a), state(b), a, b, sent);
	fflush(stdout);
	while (!go) /* not pause(): a signal right after a restore would come before it */
		usleep(10000);
	CHECK(state(a) == (fin1 ? TCP_FIN_WAIT1 : TCP_FIN_WAIT2), "a is in state %d", state(a));
	CHECK(state(b) == (fin1 ? TCP_ESTABLISHED : TCP_CLOSE_WAIT), "b is in state %d", state(b));
	ssize_t n = readall(b, in, sizeof(in));
	if (fin1) {
		CHECK(n == (ssize_t)sent, "b read %zd bytes then the end, want %zu", n, sent);
		for (ssize_t i = 0; i < n && !why[0]; i++)
			CHECK(in[i] == pattern(i), "b read %c at %zd, want %c", in[i], i, pattern(i));
	} else {
		CHECK(n == 6 && !memcmp(in, "a-data", 6), "b read %zd bytes (%.6s) then the end, want a-data", n, in);
		CHECK(readn(a, in, 6) == 0 && !memcmp(in, "b-data", 6), "a did not read b-data");
	}
	CHECK(state(b) == TCP_CLOSE_WAIT, "b is in state %d after the end", state(b));
	CHECK(send(b, "more", 4, MSG_NOSIGNAL) == 4, "b cannot send: %s", strerror(errno));
	CHECK(readn(a, in, 4) == 0 && !memcmp(in, "more", 4), "a did not read more");
	shutdown(b, SHUT_WR);
	CHECK(readall(a, in, sizeof(in)) == 0, "a did not see the end");
	printf(why[0] ? "FAIL: %s\n" : "ok\n", why);
	fflush(stdout);
	for (;;)
		pause();
}

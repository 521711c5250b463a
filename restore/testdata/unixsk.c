/* unixsk: UNIX sockets set up before a dump and checked after the restore. One state per
 * run, chosen by argv[1]:
 *
 *   stream     a stream socketpair carrying a counter both ways, each direction kept 16
 *              records ahead (so bytes are queued both ways at any moment), with
 *              SO_PASSCRED, a send timeout and sizes set on one end; and a second pair
 *              shut down for writing on one end after "bye" was sent; argv[2] "nocred"
 *              leaves SO_PASSCRED off (CRIU 4.2's dump refuses the credentials it brings
 *              into a queue)
 *   dgram      a dgram and a seqpacket socketpair with datagrams of 1, 100 and 3000 bytes
 *              queued both ways (their boundaries are checked), then a counter over them
 *   listen     a stream socket listening at the path argv[2] (mode 0640)
 *   abstract   a stream socket listening at an abstract name
 *   self       a dgram socket bound to an abstract name and connected to itself (zdtm's
 *              sockets_dgram has one); nothing queued (what it sends itself comes from a
 *              socket with a name, which a dump refuses: the sender is not saved)
 *   unconn     a stream socket never connected nor bound (fd 3) and a seqpacket one bound
 *              to an abstract name, never connected (fd 4): after the restore fd 4 listens
 *              and fd 3 (a stream socket: refused) then a new seqpacket socket connect to it
 *   dgramsrv   a dgram socket bound to an abstract name (fd 4) and two unbound ones
 *              connected to it (fds 3 and 5: one before it, one after), each with a
 *              datagram queued in it
 *   conn       a listening socket, a child that connected to it and was accepted: the
 *              parent sends a counter through the accepted socket 16 records ahead, the child
 *              echoes it back
 *
 * Counters check themselves all along: a record out of order prints "FAIL". The program
 * prints "ready pid=N", and on SIGUSR1 (sent after the restore) checks the rest of its
 * state, lets the counters run on, and prints "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "check.h"

static void fail(const char *what)
{
	printf("FAIL: %s (errno %d)\n", what, errno);
	fflush(stdout);
	exit(1);
}

static void sendall(int fd, const void *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fail("send");
		p = (const char *)p + w;
		n -= w;
	}
}

static uint64_t recv8(int fd)
{
	uint64_t v;
	size_t got = 0;
	while (got < sizeof(v)) {
		ssize_t r = recv(fd, (char *)&v + got, sizeof(v) - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail("recv");
		got += r;
	}
	return v;
}

#define AHEAD 16

/* counter sends record n on w and, AHEAD records later, expects it on r. */
struct counter {
	int w, r;
	uint64_t n;
	const char *name;
};

static void step(struct counter *c)
{
	sendall(c->w, &c->n, sizeof(c->n));
	if (c->n >= AHEAD) {
		uint64_t got = recv8(c->r), want = c->n - AHEAD;
		if (got != want) {
			printf("FAIL: %s: record %llu, want %llu\n", c->name, (unsigned long long)got,
			       (unsigned long long)want);
			fflush(stdout);
			exit(1);
		}
	}
	c->n++;
}

static void nap(void)
{
	struct timespec ts = { 0, 2000000 };
	nanosleep(&ts, NULL);
}

/* --- stream --- */
static int sp[2], shut[2], cred = 1;
static struct counter c1, c2;

static void setup_stream(void)
{
	int buf = 65536;
	struct timeval tv = { 7, 500000 };
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) || socketpair(AF_UNIX, SOCK_STREAM, 0, shut))
		fail("socketpair");
	if (setsockopt(sp[0], SOL_SOCKET, SO_PASSCRED, &cred, sizeof(cred)) ||
	    setsockopt(sp[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
	    setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf)) ||
	    setsockopt(sp[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf)))
		fail("setsockopt");
	sendall(shut[0], "bye", 3);
	if (shutdown(shut[0], SHUT_WR))
		fail("shutdown");
	c1 = (struct counter){ sp[0], sp[1], 0, "0->1" };
	c2 = (struct counter){ sp[1], sp[0], 0, "1->0" };
}

static int getint(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	getsockopt(fd, SOL_SOCKET, opt, &v, &l);
	return v;
}

static int check_stream(void)
{
	struct timeval tv;
	socklen_t l = sizeof(tv);
	char b[8];
	CHECK(getint(sp[0], SO_PASSCRED) == cred, "SO_PASSCRED %d, want %d", getint(sp[0], SO_PASSCRED), cred);
	CHECK(getint(sp[1], SO_PASSCRED) == 0, "SO_PASSCRED on the other end");
	CHECK(getint(sp[0], SO_SNDBUF) == 131072, "SO_SNDBUF %d", getint(sp[0], SO_SNDBUF));
	CHECK(getint(sp[1], SO_RCVBUF) == 131072, "SO_RCVBUF %d", getint(sp[1], SO_RCVBUF));
	getsockopt(sp[0], SOL_SOCKET, SO_SNDTIMEO, &tv, &l);
	CHECK(tv.tv_sec == 7 && tv.tv_usec == 500000, "SO_SNDTIMEO %ld.%06ld", (long)tv.tv_sec, (long)tv.tv_usec);
	CHECK(recv(shut[1], b, sizeof(b), MSG_DONTWAIT) == 3 && !memcmp(b, "bye", 3), "the shut pair lost its bytes");
	CHECK(recv(shut[1], b, sizeof(b), MSG_DONTWAIT) == 0, "no end of stream after shutdown");
	CHECK(send(shut[0], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE, "write after SHUT_WR: errno %d", errno);
	CHECK(send(shut[1], "y", 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1, "the other way is closed");
	return 1;
}

/* --- dgram, seqpacket --- */
static int dg[2], sq[2];
static const int sizes[] = { 1, 100, 3000 };
static struct counter c3, c4;

static void setup_dgram(void)
{
	char b[3000];
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sq))
		fail("socketpair");
	for (int s = 0; s < 2; s++)
		for (int i = 0; i < 3; i++) {
			memset(b, 'a' + i + 3 * s, sizeof(b));
			if (send(dg[s], b, sizes[i], 0) != sizes[i] || send(sq[s], b, sizes[i], 0) != sizes[i])
				fail("send");
		}
	c3 = (struct counter){ dg[0], dg[1], 0, "dgram" };
	c4 = (struct counter){ sq[1], sq[0], 0, "seqpacket" };
}

static int check_dgram(void)
{
	char b[4000];
	/* The counters run on the same sockets: the datagrams queued first come first. */
	for (int k = 0; k < 2; k++) {
		int *p = k ? sq : dg;
		for (int s = 0; s < 2; s++)
			for (int i = 0; i < 3; i++) {
				ssize_t n = recv(p[1 - s], b, sizeof(b), MSG_DONTWAIT);
				CHECK(n == sizes[i], "%s: datagram %d from %d: %zd bytes, want %d", k ? "seqpacket" : "dgram",
				      i, s, n, sizes[i]);
				CHECK(b[0] == 'a' + i + 3 * s && b[n - 1] == b[0], "%s: datagram %d: wrong bytes", k ? "seqpacket" : "dgram", i);
			}
	}
	return 1;
}

/* --- listen, abstract --- */
static int ls;
static struct sockaddr_un addr;
static socklen_t addrlen;

static void setup_listen(const char *path, int abstract)
{
	ls = socket(AF_UNIX, SOCK_STREAM, 0);
	addr.sun_family = AF_UNIX;
	if (abstract) {
		snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "imgtool-unixsk-%d", getpid());
		addrlen = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(addr.sun_path + 1);
	} else {
		snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
		addrlen = sizeof(addr);
		unlink(path);
	}
	if (bind(ls, (struct sockaddr *)&addr, addrlen) || listen(ls, 5))
		fail("bind/listen");
	if (!abstract && chmod(path, 0640))
		fail("chmod");
}

static int check_listen(int abstract)
{
	struct stat st;
	char b[8];
	int c = socket(AF_UNIX, SOCK_STREAM, 0), a;
	if (!abstract) {
		CHECK(stat(addr.sun_path, &st) == 0 && S_ISSOCK(st.st_mode), "no socket file at %s", addr.sun_path);
		CHECK((st.st_mode & 0777) == 0640, "socket file mode %o", st.st_mode & 0777);
	}
	CHECK(connect(c, (struct sockaddr *)&addr, addrlen) == 0, "connect: errno %d", errno);
	CHECK((a = accept(ls, NULL, NULL)) >= 0, "accept: errno %d", errno);
	CHECK(send(c, "hello", 5, 0) == 5 && recv(a, b, sizeof(b), 0) == 5 && !memcmp(b, "hello", 5), "no hello");
	close(a);
	close(c);
	return 1;
}

/* --- self --- */
static int self = -1;
static struct sockaddr_un self_addr;
static socklen_t self_len;

static void setup_self(void)
{
	self = socket(AF_UNIX, SOCK_DGRAM, 0);
	self_addr.sun_family = AF_UNIX;
	snprintf(self_addr.sun_path + 1, sizeof(self_addr.sun_path) - 1, "imgtool-unixsk-self-%d", getpid());
	self_len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(self_addr.sun_path + 1);
	if (bind(self, (struct sockaddr *)&self_addr, self_len) || connect(self, (struct sockaddr *)&self_addr, self_len))
		fail("bind/connect to itself");
}

static int check_self(void)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	char b[8];
	CHECK(getpeername(self, (struct sockaddr *)&a, &l) == 0 && l == self_len && !memcmp(&a, &self_addr, l),
	      "not connected to itself: getpeername errno %d, length %d", errno, (int)l);
	l = sizeof(a);
	CHECK(send(self, "3", 1, 0) == 1 && recvfrom(self, b, sizeof(b), MSG_DONTWAIT, (struct sockaddr *)&a, &l) == 1 &&
	      b[0] == '3' && l == self_len && !memcmp(&a, &self_addr, l), "a new datagram to itself, from itself");
	return 1;
}

/* --- unconn --- */
static int unconn[2] = { -1, -1 };
static struct sockaddr_un unconn_addr;
static socklen_t unconn_len;

static void setup_unconn(void)
{
	unconn[0] = socket(AF_UNIX, SOCK_STREAM, 0);
	unconn[1] = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	unconn_addr.sun_family = AF_UNIX;
	snprintf(unconn_addr.sun_path + 1, sizeof(unconn_addr.sun_path) - 1, "imgtool-unixsk-unconn-%d", getpid());
	unconn_len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(unconn_addr.sun_path + 1);
	if (bind(unconn[1], (struct sockaddr *)&unconn_addr, unconn_len))
		fail("bind");
}

static int check_unconn(void)
{
	char b[8];
	int c = socket(AF_UNIX, SOCK_SEQPACKET, 0), a;
	CHECK(unconn[0] == 3 && unconn[1] == 4, "fds %d %d", unconn[0], unconn[1]);
	CHECK(getint(unconn[0], SO_TYPE) == SOCK_STREAM && getint(unconn[1], SO_TYPE) == SOCK_SEQPACKET, "types");
	CHECK(listen(unconn[1], 1) == 0, "listen: errno %d", errno);
	CHECK(connect(unconn[0], (struct sockaddr *)&unconn_addr, unconn_len) < 0 && errno == ECONNREFUSED,
	      "a stream socket connected to a seqpacket listener (errno %d)", errno);
	CHECK(connect(c, (struct sockaddr *)&unconn_addr, unconn_len) == 0, "connect: errno %d", errno);
	CHECK((a = accept(unconn[1], NULL, NULL)) >= 0, "accept: errno %d", errno);
	CHECK(send(c, "hi", 2, 0) == 2 && recv(a, b, sizeof(b), 0) == 2 && !memcmp(b, "hi", 2), "no hi");
	close(a);
	close(c);
	return 1;
}

/* --- dgramsrv --- */
static int srv = -1, cli[2];

static void setup_dgramsrv(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	socklen_t l;
	snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "imgtool-unixsk-srv-%d", getpid());
	l = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a.sun_path + 1);
	cli[0] = socket(AF_UNIX, SOCK_DGRAM, 0);
	srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	cli[1] = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(srv, (struct sockaddr *)&a, l))
		fail("bind");
	for (int i = 0; i < 2; i++) {
		if (connect(cli[i], (struct sockaddr *)&a, l) || send(cli[i], i ? "from2" : "from1", 5, 0) != 5)
			fail("connect/send");
	}
}

static int check_dgramsrv(void)
{
	char b[8];
	CHECK(srv == 4 && cli[0] == 3 && cli[1] == 5, "fds %d %d %d", srv, cli[0], cli[1]);
	CHECK(recv(srv, b, sizeof(b), MSG_DONTWAIT) == 5 && !memcmp(b, "from1", 5), "first queued datagram");
	CHECK(recv(srv, b, sizeof(b), MSG_DONTWAIT) == 5 && !memcmp(b, "from2", 5), "second queued datagram");
	CHECK(recv(srv, b, sizeof(b), MSG_DONTWAIT) < 0 && errno == EAGAIN, "more than two datagrams");
	for (int i = 0; i < 2; i++) {
		CHECK(send(cli[i], "again", 5, 0) == 5, "client %d cannot send: errno %d", i, errno);
		CHECK(recv(srv, b, sizeof(b), MSG_DONTWAIT) == 5 && !memcmp(b, "again", 5), "client %d's new datagram", i);
	}
	return 1;
}

/* --- conn --- */
static struct counter c5;
static pid_t child;

static void setup_conn(void)
{
	setup_listen(NULL, 1);
	child = fork();
	if (child == 0) {
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&addr, addrlen))
			fail("connect");
		close(ls);
		for (;;) {
			uint64_t v = recv8(c);
			sendall(c, &v, sizeof(v));
		}
	}
	int a = accept(ls, NULL, NULL);
	if (a < 0)
		fail("accept");
	c5 = (struct counter){ a, a, 0, "echo" };
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "stream";
	int ok = 1;
	signal(SIGUSR1, on_usr1);
	if (!strcmp(mode, "stream")) {
		cred = !(argc > 2 && !strcmp(argv[2], "nocred"));
		setup_stream();
	}
	else if (!strcmp(mode, "dgram"))
		setup_dgram();
	else if (!strcmp(mode, "listen"))
		setup_listen(argc > 2 ? argv[2] : "unixsk.sock", 0);
	else if (!strcmp(mode, "abstract"))
		setup_listen(NULL, 1);
	else if (!strcmp(mode, "self"))
		setup_self();
	else if (!strcmp(mode, "dgramsrv"))
		setup_dgramsrv();
	else if (!strcmp(mode, "unconn"))
		setup_unconn();
	else if (!strcmp(mode, "conn"))
		setup_conn();
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	for (;;) {
		if (go) {
			if (!strcmp(mode, "stream"))
				ok = check_stream();
			else if (!strcmp(mode, "dgram"))
				ok = check_dgram();
			else if (!strcmp(mode, "listen") || !strcmp(mode, "abstract"))
				ok = check_listen(!strcmp(mode, "abstract"));
			else if (!strcmp(mode, "self"))
				ok = check_self();
			else if (!strcmp(mode, "dgramsrv"))
				ok = check_dgramsrv();
			else if (!strcmp(mode, "unconn"))
				ok = check_unconn();
			/* The counters go on: 100 more records each. */
			for (int i = 0; ok && i < 100; i++) {
				if (c1.name) {
					step(&c1);
					step(&c2);
				}
				if (c3.name) { /* after the check: the queues were emptied by it */
					step(&c3);
					step(&c4);
				}
				if (c5.name)
					step(&c5);
			}
			if (ok)
				printf("ok\n");
			else
				printf("FAIL: %s\n", why);
			fflush(stdout);
			go = 0;
		}
		if (c1.name) {
			step(&c1);
			step(&c2);
		}
		if (c5.name)
			step(&c5);
		nap();
	}
}

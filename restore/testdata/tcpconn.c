/* tcpconn: an established loopback TCP connection between two processes of one tree,
 * carrying a counter both ways, with data queued both ways all the time. argv[1] is tcp4
 * (127.0.0.1) or tcp6 ([::1]), argv[2] the port.
 *
 * The parent listens at the port (and keeps the listener), forks a child that connects,
 * and accepts it. Each end then sends 16-byte records "%015u\n" counting up from 0, 64 at
 * a time, as fast as its socket takes them (non-blocking), and reads at most 64 bytes every 2 ms,
 * checking that each record received is the next number: nothing lost, nothing twice,
 * nothing out of order. Small socket buffers and the slow reader keep both queues of both
 * sockets full, so a dump finds data queued both ways. Once 200 records came each way the
 * parent prints "ready pid=N".
 *
 * SIGUSR1 (sent to the parent after a restore, or a dump with --leave-running): the parent
 * passes it to the child, each end then waits until it has received 300 more records
 * without a fault, the child reports through a pipe, and the parent prints "ok" or
 * "FAIL: why". SIGUSR2: each end waits until its peer is gone (a read sees the end of the
 * stream or an error, a send fails), as after a restore with --tcp-close, and the parent
 * prints "ok closed" or "FAIL: why". A fault seen any other time is printed at once as
 * "FAIL: why".
 *
 * tcp4ext: no child; the process connects to 127.0.0.1:PORT, where the test listens and
 * plays the other end (the same records, read as slowly), and checks as above. */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REC 16

static volatile sig_atomic_t check, closing;
static void on_usr1(int sig) { check = 1; }
static void on_usr2(int sig) { closing = 1; }

struct end {
	int fd;
	unsigned long next, got; /* the next record to send, records received whole */
	char out[64 * REC];      /* records being sent */
	int outlen, outoff;      /* bytes of them, bytes of them sent */
	char in[REC];
	int inoff;
	int closed; /* the peer is gone */
	char why[200];
};

/* pump sends what the socket takes and reads up to 64 bytes. */
static void pump(struct end *e)
{
	if (!e->closed) {
		for (;;) {
			if (e->outoff == e->outlen) {
				char rec[REC + 1];
				for (e->outlen = 0; e->outlen < (int)sizeof(e->out); e->outlen += REC) {
					snprintf(rec, sizeof(rec), "%015lu\n", e->next++);
					memcpy(e->out + e->outlen, rec, REC);
				}
				e->outoff = 0;
			}
			ssize_t n = send(e->fd, e->out + e->outoff, e->outlen - e->outoff, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0) {
				if (errno != EAGAIN)
					e->closed = 1;
				break;
			}
			e->outoff += n;
		}
	}
	char buf[64];
	ssize_t n = e->closed ? 0 : recv(e->fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN)) {
		e->closed = 1;
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		e->in[e->inoff++] = buf[i];
		if (e->inoff < REC)
			continue;
		e->inoff = 0;
		char want[REC + 1];
		snprintf(want, sizeof(want), "%015lu\n", e->got);
		if (memcmp(e->in, want, REC) && !e->why[0])
			snprintf(e->why, sizeof(e->why), "record %lu received as %.15s", e->got, e->in);
		e->got++;
	}
}

static void tick(void)
{
	struct timespec ts = {0, 2 * 1000 * 1000};
	nanosleep(&ts, NULL);
}

/* run is the life of one end: the parent's (child the child's pid, verdict the pipe from
 * it), the child's (child 0, report the pipe to the parent) or the only one (child -1). */
static void run(struct end *e, pid_t child, int report, int verdict)
{
	int ready = child == 0;
	for (;;) {
		pump(e);
		if (e->why[0] && !check && !closing) {
			printf("FAIL: %s\n", e->why);
			fflush(stdout);
			e->why[0] = 0;
		}
		if (!ready && e->next >= 1000 && e->got >= 200) {
			ready = 1;
			printf("ready pid=%d\n", getpid());
			fflush(stdout);
		}
		if (check || closing) {
			int usr1 = check;
			check = closing = 0;
			if (child > 0)
				kill(child, usr1 ? SIGUSR1 : SIGUSR2);
			unsigned long from = e->got;
			const char *why = NULL;
			for (int i = 0; i < 5000 && !why; i++) { /* 10 s at most */
				pump(e);
				if (e->why[0])
					why = e->why;
				else if (usr1 && e->closed)
					why = "the connection was closed";
				else if (usr1 && e->got >= from + 300)
					break;
				else if (!usr1 && e->closed)
					break;
				tick();
			}
			if (!why && usr1 && e->got < from + 300)
				why = "the records stopped coming";
			if (!why && !usr1 && !e->closed)
				why = "the connection is still open";
			char msg[256];
			snprintf(msg, sizeof(msg), "%s%s", why ? "FAIL: " : "", why ? why : "");
			if (child == 0) {
				if (write(report, msg, strlen(msg) + 1) < 0)
					exit(1);
			} else {
				char theirs[256] = {0};
				struct pollfd p = {verdict, POLLIN, 0};
				if (child > 0 && (poll(&p, 1, 15000) != 1 || read(verdict, theirs, sizeof(theirs) - 1) <= 0))
					snprintf(theirs, sizeof(theirs), "FAIL: no word from the child");
				if (why)
					printf("%s (parent)\n", msg);
				else if (theirs[0])
					printf("%s (child)\n", theirs);
				else
					printf(usr1 ? "ok\n" : "ok closed\n");
				fflush(stdout);
			}
		}
		tick();
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: tcpconn tcp4|tcp6|tcp4ext PORT\n");
		return 2;
	}
	int v6 = !strcmp(argv[1], "tcp6"), port = atoi(argv[2]), one = 1, small = 4096;
	struct sockaddr_storage ss = {0};
	socklen_t sl;
	if (v6) {
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	}
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	if (!strcmp(argv[1], "tcp4ext")) {
		struct end e = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
		setsockopt(e.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		setsockopt(e.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		if (connect(e.fd, (void *)&ss, sl)) {
			perror("connect");
			return 1;
		}
		run(&e, -1, -1, -1);
	}
	int ls = socket(ss.ss_family, SOCK_STREAM, 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(ls, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)); /* the accepted end's */
	if (bind(ls, (void *)&ss, sl) || listen(ls, 4)) {
		perror("listen");
		return 1;
	}
	int pfd[2];
	if (pipe(pfd)) {
		perror("pipe");
		return 1;
	}
	pid_t child = fork();
	if (child == 0) {
		close(ls);
		close(pfd[0]);
		struct end e = {.fd = socket(ss.ss_family, SOCK_STREAM, 0)};
		setsockopt(e.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
		setsockopt(e.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		setsockopt(e.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(e.fd, (void *)&ss, sl)) {
			perror("connect");
			return 1;
		}
		run(&e, 0, pfd[1], -1);
	}
	close(pfd[1]);
	struct end e = {.fd = accept(ls, NULL, NULL)};
	if (e.fd < 0) {
		perror("accept");
		return 1;
	}
	setsockopt(e.fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	run(&e, child, -1, pfd[0]);
	return 0;
}

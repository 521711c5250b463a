/* extunix: datagram sockets connected to a socket outside the tree (the test's), as a
 * program logging to /dev/log has one: dumped and restored with --ext-unix-sk.
 *
 * argv[1] is the name of the test's socket (a path, or @NAME for an abstract name) and
 * argv[2] an abstract name (@NAME) for this program's second socket.
 *
 *   fd 3  connected to argv[1]; sends "tick N", N counting from 0, every 2 ms
 *   fd 4  bound to argv[2], connected to argv[1]: the test queues three datagrams in it
 *         (1, 100 and 3000 bytes of 'a', 'b', 'c') before the dump, which the program
 *         reads only after the restore
 *
 * Prints "ready pid=N". On SIGUSR1 it checks that fd 4 holds exactly the three datagrams,
 * sends "fd4 ok" through fd 4, and prints "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

static volatile sig_atomic_t go;
static void on_usr1(int sig) { go = 1; }

static void fail(const char *what)
{
	printf("FAIL: %s (errno %d)\n", what, errno);
	fflush(stdout);
	exit(1);
}

/* addr fills a with name: a path, or an abstract name for @NAME. */
static socklen_t addr(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (name[0] == '@') {
		snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s", name + 1);
		return offsetof(struct sockaddr_un, sun_path) + strlen(name);
	}
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

/* check reads fd 4's queue: the three datagrams, then nothing. */
static const char *check(int fd)
{
	static const int sizes[] = { 1, 100, 3000 };
	static char why[128];
	char b[4000];
	for (int i = 0; i < 3; i++) {
		ssize_t n = recv(fd, b, sizeof(b), MSG_DONTWAIT);
		if (n != sizes[i] || b[0] != 'a' + i || b[n - 1] != b[0]) {
			snprintf(why, sizeof(why), "datagram %d: %zd bytes starting %c, want %d of %c", i, n,
				 n > 0 ? b[0] : '-', sizes[i], 'a' + i);
			return why;
		}
	}
	if (recv(fd, b, sizeof(b), MSG_DONTWAIT) >= 0 || errno != EAGAIN)
		return "more than three datagrams queued";
	if (send(fd, "fd4 ok", 6, 0) != 6)
		return "send through fd 4";
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_un peer, own;
	socklen_t pl, ol;
	struct timespec nap = { 0, 2000000 };
	char b[32];
	if (argc < 3)
		fail("usage: extunix PEER @NAME");
	pl = addr(&peer, argv[1]);
	ol = addr(&own, argv[2]);
	int s3 = socket(AF_UNIX, SOCK_DGRAM, 0), s4 = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (s3 != 3 || s4 != 4)
		fail("sockets not at fds 3 and 4");
	if (connect(s3, (struct sockaddr *)&peer, pl) || bind(s4, (struct sockaddr *)&own, ol) ||
	    connect(s4, (struct sockaddr *)&peer, pl))
		fail("connect");
	signal(SIGUSR1, on_usr1);
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	for (unsigned long n = 0;; n++) {
		int len = snprintf(b, sizeof(b), "tick %lu", n);
		while (send(s3, b, len, 0) != len)
			if (errno != EINTR)
				fail("send");
		if (go) {
			const char *why = check(s4);
			if (why)
				printf("FAIL: %s\n", why);
			else
				printf("ok\n");
			fflush(stdout);
			go = 0;
		}
		nanosleep(&nap, NULL);
	}
}

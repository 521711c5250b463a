/* extunix: datagram sockets connected to a socket outside the tree (the test's), as a
 * program logging to /dev/log has one: dumped and restored with --ext-unix-sk.
 *
 * argv[1] is the name of the test's socket (a path, or @NAME for an abstract name) and
 * argv[2] an abstract name (@NAME) for this program's second socket.
 *
 *   fd 3  connected to argv[1]; sends "tick N", N counting from 0, every 2 ms
 *   fd 4  bound to argv[2], connected to argv[1]
 *
 * (Nothing is queued in them: what argv[1] sends them comes from a socket with a name,
 * which a dump refuses, the sender not being saved.)
 *
 * Prints "ready pid=N". On SIGUSR1 it checks that fd 3 and fd 4 are connected to argv[1]
 * (getpeername) and that fd 4 is bound to argv[2] (getsockname), sends "fd4 ok" through
 * fd 4, and prints "ok" or "FAIL: why". */
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

/* same tells whether a (of length l) is the address b (of length bl). */
static int same(struct sockaddr_un *a, socklen_t l, struct sockaddr_un *b, socklen_t bl)
{
	return l == bl && !memcmp(a, b, l);
}

static struct sockaddr_un peer, own;
static socklen_t pl, ol;

/* check checks the names of fds 3 and 4 and sends through fd 4. */
static const char *check(void)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	if (getpeername(3, (struct sockaddr *)&a, &l) || !same(&a, l, &peer, pl))
		return "fd 3 is not connected to the test's socket";
	l = sizeof(a);
	if (getpeername(4, (struct sockaddr *)&a, &l) || !same(&a, l, &peer, pl))
		return "fd 4 is not connected to the test's socket";
	l = sizeof(a);
	if (getsockname(4, (struct sockaddr *)&a, &l) || !same(&a, l, &own, ol))
		return "fd 4 lost its name";
	if (send(4, "fd4 ok", 6, 0) != 6)
		return "send through fd 4";
	return NULL;
}

int main(int argc, char **argv)
{
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
			const char *why = check();
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

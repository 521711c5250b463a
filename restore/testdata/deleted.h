/* deleted.h: what the programs that check deleted files after a restore share (ghosts.c,
 * linkremap.c): the self-check protocol of check.h (with room for long reports),
 * check_twice, die for set-up failures, and deleted(). Include it after the system
 * headers (stdio, stdlib, string, unistd, signal). */
#define PAGE 4096

#define WHY_SIZE 8400
#include "check.h"

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* deleted tells whether fd's /proc link is NAME (deleted), NAME ending with suffix. */
static int deleted(int fd, const char *suffix)
{
	char p[64], l[4096];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, l, sizeof(l) - 1);
	if (n < 0)
		return 0;
	l[n] = 0;
	size_t sl = strlen(suffix), dl = strlen(" (deleted)");
	return (size_t)n >= sl + dl && !strcmp(l + n - dl, " (deleted)") && !strncmp(l + n - dl - sl, suffix, sl);
}

/* check_twice runs check(mode) once set up, prints "ready pid=N", waits for SIGUSR1 (sent
 * after the restore; on_usr1 must be its handler), runs it again and prints "ok" or
 * "FAIL: why", then sleeps for ever. It returns only if the first check fails. */
static int check_twice(int (*check)(const char *), const char *mode)
{
	if (!check(mode)) {
		printf("FAIL before the dump: %s\n", why);
		return 1;
	}
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	while (!go) /* polled: after a restore, a signal may arrive before pause() is re-entered */
		usleep(10000);
	if (check(mode))
		printf("ok\n");
	else
		printf("FAIL: %s\n", why);
	fflush(stdout);
	for (;;)
		pause();
}

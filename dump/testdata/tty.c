/*
 * tty: terminals the dump refuses, one per mode, then loops.
 *   devtty  /dev/tty open (fd 5) on a pty that is no longer its controlling terminal (TIOCNOTTY)
 *   queued  the same, with a line written into the master that nobody reads (fd 3, the master)
 *   master  a pty master whose slave was closed and is nobody's terminal (fd 3)
 *   shell   a session leader with a pty as its terminal and a child in its session: the child
 *           is the tree to dump, a shell's job (its pid is printed as child=)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "devtty";
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m != 3 || grantpt(m) || unlockpt(m))
		return 1;
	if (!strcmp(mode, "master")) {
		int s = open(ptsname(m), O_RDWR | O_NOCTTY);
		if (s < 0)
			return 1;
		close(s);
		printf("pid=%d\n", getpid());
		fflush(stdout);
		for (;;)
			pause();
	}
	setsid();
	int s = open(ptsname(m), O_RDWR); /* a session leader without a terminal: it becomes its ctty */
	if (s != 4)
		return 1;
	if (!strcmp(mode, "devtty")) {
		signal(SIGHUP, SIG_IGN); /* giving the terminal up hangs its foreground group up */
		if (open("/dev/tty", O_RDWR) != 5 || ioctl(s, TIOCNOTTY))
			return 1;
	}
	if (!strcmp(mode, "queued") && write(m, "hello\n", 6) != 6)
		return 1;
	if (!strcmp(mode, "shell")) {
		if (fork() == 0) {
			close(m);
			printf("pid=%d child=%d\n", getppid(), getpid()); /* once it holds no master */
			fflush(stdout);
			for (;;)
				pause();
		}
	} else {
		printf("pid=%d\n", getpid());
	}
	fflush(stdout);
	for (;;)
		pause();
}

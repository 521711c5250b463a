/* tty: acquires a controlling terminal (a new pty) and loops. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(void)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		return 1;
	setsid();
	int s = open(ptsname(m), O_RDWR); /* session leader without a terminal: becomes its ctty */
	if (s < 0)
		return 1;
	printf("pid=%d master=%d slave=%d\n", getpid(), m, s);
	fflush(stdout);
	for (;;)
		pause();
}

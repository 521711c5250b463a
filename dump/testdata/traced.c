/* traced: forks a child that asks to be traced by its parent (PTRACE_TRACEME); both loop.
 * Prints "pid=PARENT child=CHILD". */
#include <stdio.h>
#include <sys/ptrace.h>
#include <unistd.h>

int main(void)
{
	int p[2];
	if (pipe(p))
		return 1;
	pid_t c = fork();
	if (c == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		close(p[0]);
		close(p[1]); /* tell the parent tracing is set up */
		for (;;)
			pause();
	}
	close(p[1]);
	char b;
	if (read(p[0], &b, 1) < 0)
		return 1;
	printf("pid=%d child=%d\n", getpid(), c);
	fflush(stdout);
	for (;;)
		pause();
}

/* utsns: moves itself into a new UTS namespace (unshare(CLONE_NEWUTS)), renames the host
 * there, prints "pid=PID" and loops. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	if (unshare(CLONE_NEWUTS) || sethostname("imgtool-utsns", 13)) {
		perror("unshare");
		return 1;
	}
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}

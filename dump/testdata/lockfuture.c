/* lockfuture: a process that called mlockall(MCL_CURRENT | MCL_FUTURE): every mapping it
 * makes from then on is locked. Prints "ready" and ticks. */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (mlockall(MCL_CURRENT | MCL_FUTURE)) {
		perror("mlockall");
		return 1;
	}
	printf("ready\n");
	for (unsigned long n = 0;; n++) {
		printf("tick %lu\n", n);
		usleep(100000);
	}
}

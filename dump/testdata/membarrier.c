/* membarrier: a process registered for MEMBARRIER_CMD_PRIVATE_EXPEDITED, which it uses
 * every tick (a process not registered gets EPERM). Prints "ready" and ticks. */
#include <linux/membarrier.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0)) {
		perror("membarrier register");
		return 1;
	}
	printf("ready\n");
	for (unsigned long n = 0;; n++) {
		if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0))
			perror("membarrier");
		printf("tick %lu\n", n);
		usleep(100000);
	}
}

/* iouring: holds an io_uring instance (io_uring_setup, fd 3), prints "pid=PID ring=FD" and
 * loops. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(void)
{
	unsigned char params[120]; /* struct io_uring_params */
	memset(params, 0, sizeof(params));
	long fd = syscall(425 /* io_uring_setup */, 8, params);
	if (fd < 0) {
		perror("io_uring_setup");
		return 1;
	}
	printf("pid=%d ring=%ld\n", getpid(), fd);
	fflush(stdout);
	for (;;)
		pause();
}

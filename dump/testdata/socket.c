/* socket: holds a unix socketpair on fds 3 and 4 and loops. */
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp))
		return 1;
	printf("pid=%d sp=%d,%d\n", getpid(), sp[0], sp[1]);
	fflush(stdout);
	for (;;)
		pause();
}

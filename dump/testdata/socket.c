/* socket: holds a UDP socket on fd 3 (only UNIX sockets are dumped) and loops. */
#include <stdio.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

int main(void)
{
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0)
		return 1;
	printf("pid=%d sock=%d\n", getpid(), s);
	fflush(stdout);
	for (;;)
		pause();
}

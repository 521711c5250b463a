/* socket: holds a UDP socket bound at 127.0.0.1 on fd 3 with a datagram it sent itself
 * queued (refused: queued datagrams are not dumped) and loops. */
#include <stdio.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

int main(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t l = sizeof(a);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0 || bind(s, (void *)&a, sizeof(a)) || getsockname(s, (void *)&a, &l) ||
	    sendto(s, "queued", 6, 0, (void *)&a, sizeof(a)) != 6)
		return 1;
	printf("pid=%d sock=%d\n", getpid(), s);
	fflush(stdout);
	for (;;)
		pause();
}

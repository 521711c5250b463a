/* inetrefuse: inet sockets the dump refuses, on loopback at port argv[2], chosen by argv[1]:
 *
 *   established  a TCP listener (fd 3), a client connected to it (fd 4) and the accepted
 *                socket (fd 5): both ends of the connection are refused
 *   pending      a TCP listener (fd 3) with a client (fd 4) it has not accepted
 *   udpqueue     a UDP socket (fd 3) with a datagram queued, sent to itself
 *   closewait    a client (fd 3) whose accepted peer was closed: CLOSE_WAIT
 *   urgent       as established, and the client sent one byte of urgent data (MSG_OOB)
 *                the accepted socket has not read
 *   peekoff      as established, with SO_PEEK_OFF set on the accepted socket
 *
 * Prints pid=PID and sleeps. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "established";
	int port = argc > 2 ? atoi(argv[2]) : 47311, one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (!strcmp(mode, "udpqueue")) {
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		if (bind(s, (void *)&a, sizeof(a)) || sendto(s, "queued", 6, 0, (void *)&a, sizeof(a)) != 6) {
			perror("udp");
			return 1;
		}
	} else {
		int ls = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(ls, (void *)&a, sizeof(a)) || listen(ls, 4)) {
			perror("listen");
			return 1;
		}
		int cs = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(cs, (void *)&a, sizeof(a))) {
			perror("connect");
			return 1;
		}
		if (strcmp(mode, "pending")) {
			int ss = accept(ls, NULL, NULL);
			if (!strcmp(mode, "urgent") && send(cs, "!", 1, MSG_OOB) != 1) {
				perror("send");
				return 1;
			}
			if (!strcmp(mode, "peekoff") && setsockopt(ss, SOL_SOCKET, SO_PEEK_OFF, &one, sizeof(one))) {
				perror("SO_PEEK_OFF");
				return 1;
			}
			if (!strcmp(mode, "closewait")) {
				close(ss);
				close(ls);
				dup2(cs, 3);
				close(cs);
				usleep(100000);
			}
		}
	}
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}

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
 *   closedport   a client (fd 3) and a client bound to port argv[2]+1 before it connected
 *                (fd 4), each connection shut down both ways (FINs exchanged: both
 *                sockets are closed; the first gave its port up, the second keeps it)
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
	} else if (!strcmp(mode, "closedport")) {
		int ls = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(ls, (void *)&a, sizeof(a)) || listen(ls, 4)) {
			perror("listen");
			return 1;
		}
		struct sockaddr_in b = a;
		b.sin_port = htons(port + 1);
		int c1 = socket(AF_INET, SOCK_STREAM, 0), c2 = socket(AF_INET, SOCK_STREAM, 0);
		if (c1 != 4 || c2 != 5 || bind(c2, (void *)&b, sizeof(b)) || connect(c1, (void *)&a, sizeof(a)) ||
		    connect(c2, (void *)&a, sizeof(a))) {
			perror("connect");
			return 1;
		}
		int s1 = accept(ls, NULL, NULL), s2 = accept(ls, NULL, NULL);
		shutdown(c1, SHUT_WR);
		shutdown(c2, SHUT_WR);
		shutdown(s1, SHUT_WR);
		shutdown(s2, SHUT_WR);
		usleep(100000);
		close(s1);
		close(s2);
		close(ls);
		dup2(c1, 3);
		dup2(c2, 4);
		close(c1);
		close(c2);
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

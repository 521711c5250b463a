/* unixrefuse: sockets a dump must refuse, one state per run (argv[1]), on fd 3 and up:
 *
 *   outside  a stream socket connected to the abstract name argv[2], whose listener (and
 *            so the peer) belongs to the test, outside the tree; it reads the one byte the
 *            test sends once it has accepted, so the connection is no longer queued
 *   rights   a socketpair with a file descriptor in flight (SCM_RIGHTS queued in fd 4)
 *   icon     a listening socket (fd 3) and a client (fd 4) connected to it, not accepted
 *   inet     a TCP socket (fd 3) and a UDP socket (fd 4), both dumped, a netlink socket
 *            (fd 5) and a packet socket (fd 6), refused
 *
 * Prints pid=PID and sleeps. */
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

static socklen_t abstract(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s", name);
	return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "rights";
	struct sockaddr_un a;
	char name[64];
	if (!strcmp(mode, "outside")) {
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		socklen_t l = abstract(&a, argc > 2 ? argv[2] : "x");
		char hello;
		if (connect(c, (struct sockaddr *)&a, l)) {
			perror("connect");
			return 1;
		}
		if (read(c, &hello, 1) != 1) {
			perror("read");
			return 1;
		}
	} else if (!strcmp(mode, "rights")) {
		int sp[2], fd = 0;
		char c = 'x', cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { &c, 1 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *ch = CMSG_FIRSTHDR(&m);
		socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
		ch->cmsg_level = SOL_SOCKET;
		ch->cmsg_type = SCM_RIGHTS;
		ch->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(ch), &fd, sizeof(int));
		if (sendmsg(sp[0], &m, 0) != 1) {
			perror("sendmsg");
			return 1;
		}
	} else if (!strcmp(mode, "icon")) {
		int l = socket(AF_UNIX, SOCK_STREAM, 0), c = socket(AF_UNIX, SOCK_STREAM, 0);
		snprintf(name, sizeof(name), "imgtool-unixrefuse-%d", getpid());
		socklen_t n = abstract(&a, name);
		if (bind(l, (struct sockaddr *)&a, n) || listen(l, 4) || connect(c, (struct sockaddr *)&a, n)) {
			perror("icon");
			return 1;
		}
	} else if (!strcmp(mode, "inet")) {
		socket(AF_INET, SOCK_STREAM, 0);
		socket(AF_INET, SOCK_DGRAM, 0);
		socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
		socket(AF_PACKET, SOCK_DGRAM, 0);
	}
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}

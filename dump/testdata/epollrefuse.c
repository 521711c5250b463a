/* epollrefuse: an epoll whose targets a restore could not register again exactly.
 * argv[1]:
 *   socket  an epoll watching a netlink socket (fd 6; only UNIX, TCP and UDP sockets are
 *           supported: the socketpair on fds 4 and 5 is fine)
 *   closed  an epoll watching an eventfd registered as fd N; N closed, the eventfd kept
 *           open through a dup (the registration lives on, under a number the process no
 *           longer has)
 *   reused  the same, then N reused by /dev/null
 * Prints pid=PID and the epoll's fd, then sleeps. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <linux/netlink.h>

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "socket";
	int ep = epoll_create1(0), t;
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 1 };
	if (!strcmp(mode, "socket")) {
		int sp[2];
		socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
		t = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
		epoll_ctl(ep, EPOLL_CTL_ADD, t, &ev);
	} else {
		t = eventfd(0, 0);
		epoll_ctl(ep, EPOLL_CTL_ADD, t, &ev);
		dup(t);
		close(t);
		if (!strcmp(mode, "reused"))
			open("/dev/null", O_RDONLY);
	}
	printf("ep=%d tfd=%d pid=%d\n", ep, t, getpid());
	fflush(stdout);
	for (;;)
		pause();
}

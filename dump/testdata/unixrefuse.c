/* unixrefuse: sockets a dump must refuse, one state per run (argv[1]), on fd 3 and up:
 *
 *   outside  a stream socket connected to the abstract name argv[2], whose listener (and
 *            so the peer) belongs to the test, outside the tree; it reads the one byte the
 *            test sends once it has accepted, so the connection is no longer queued
 *   rights   a socketpair with a file descriptor in flight (SCM_RIGHTS queued in fd 4)
 *   icon     a listening socket (fd 3) and a client (fd 4) connected to it, not accepted
 *   inet     a TCP socket (fd 3) and a UDP socket (fd 4), both dumped, a netlink socket
 *            (fd 5) and a packet socket (fd 6), refused
 *   sender   a dgram socket bound to an abstract name (fd 3) with a datagram queued that a
 *            socket bound to another name (fd 4, connected to it) sent, and one that an
 *            unbound socket (fd 5) sent
 *   extunix  sockets connected to peers outside the tree, held by an orphan (a grandchild
 *            whose parent exited: not a descendant; it exits when this program does):
 *            fd 3 a stream connection (accepted), fd 4 a dgram socket connected to a socket
 *            that then connected itself to another one, fd 5 one connected to a socket
 *            whose file was then removed, fd 6 one connected to a relative name
 *            ("rel.sock", in the working directory), fd 7 a dgram socketpair's end (no
 *            name), fd 8 one connected to an unconnected socket with an abstract name: the
 *            only one --ext-unix-sk dumps; fd 21, the write end of a pipe whose read end
 *            the orphan holds (refused). Prints orphan=PID too.
 *   renamed  socket files renamed or moved after the bind, in the working directory: fd 3
 *            listening, bound to its absolute path abs.sock.tmp, then renamed abs.sock (as
 *            Java's attach listener does); fd 4 a dgram socket bound to the relative
 *            name rel.sock, then renamed rel.sock.old; fd 5 one bound to moved.sock, then
 *            moved into sub/ (dumped: a relative name is bound again in the directory its
 *            file is in)
 *   chroot   chrooted into croot.d (made in the working directory), a stream socket (fd 3)
 *            listening at the absolute name /in.sock there
 *
 * Prints pid=PID and sleeps. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

static void die(const char *what)
{
	perror(what);
	exit(1);
}

/* at moves fd to number n. */
static void at(int fd, int n)
{
	if (fd < 0 || (fd != n && (dup2(fd, n) != n || close(fd))))
		die("dup2");
}

/* high moves fd above the numbers the sockets take. */
static int high(int fd)
{
	int n = fcntl(fd, F_DUPFD, 20);
	if (n < 0 || close(fd))
		die("F_DUPFD");
	return n;
}

static socklen_t path_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", path);
	return offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
}

static int bound(int type, struct sockaddr_un *a, socklen_t l)
{
	int s = socket(AF_UNIX, type, 0);
	if (s < 0 || bind(s, (struct sockaddr *)a, l))
		die("bind");
	return s;
}

static int connected(int type, struct sockaddr_un *a, socklen_t l)
{
	int s = socket(AF_UNIX, type, 0);
	if (s < 0 || connect(s, (struct sockaddr *)a, l))
		die("connect");
	return s;
}

/* extunix: see the top. The orphan's names end in this program's pid. */
static void extunix(void)
{
	int life[2], ready[2], go[2], sp[2];
	struct sockaddr_un la, qa, ra, oka, ga, rela;
	char n[64], gone[4096];
	socklen_t ll, ql, rl, okl, gl, rell;
	pid_t child, orphan;
	if (pipe(life) || pipe(ready) || pipe(go) || socketpair(AF_UNIX, SOCK_DGRAM, 0, sp))
		die("pipe");
	life[0] = high(life[0]), life[1] = high(life[1]);
	ready[0] = high(ready[0]), ready[1] = high(ready[1]), go[0] = high(go[0]), go[1] = high(go[1]);
	sp[0] = high(sp[0]), sp[1] = high(sp[1]);
	snprintf(n, sizeof(n), "imgtool-extrefuse-l-%d", getpid());
	ll = abstract(&la, n);
	snprintf(n, sizeof(n), "imgtool-extrefuse-q-%d", getpid());
	ql = abstract(&qa, n);
	snprintf(n, sizeof(n), "imgtool-extrefuse-r-%d", getpid());
	rl = abstract(&ra, n);
	snprintf(n, sizeof(n), "imgtool-extrefuse-ok-%d", getpid());
	okl = abstract(&oka, n);
	if (!getcwd(gone, sizeof(gone) - 16))
		die("getcwd");
	strcat(gone, "/gone.sock");
	gl = path_addr(&ga, gone);
	rell = path_addr(&rela, "rel.sock");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		if (fork() != 0)
			_exit(0); /* the grandchild is reparented: out of the tree */
		int l, q, c;
		char b;
		close(life[1]), close(ready[0]), close(go[1]), close(sp[1]);
		l = bound(SOCK_STREAM, &la, ll);
		q = bound(SOCK_DGRAM, &qa, ql);
		bound(SOCK_DGRAM, &ra, rl);
		bound(SOCK_DGRAM, &oka, okl);
		bound(SOCK_DGRAM, &ga, gl);
		bound(SOCK_DGRAM, &rela, rell);
		orphan = getpid();
		if (listen(l, 1) || write(ready[1], &orphan, sizeof(orphan)) != sizeof(orphan))
			die("listen");
		if ((c = accept(l, NULL, NULL)) < 0 || read(go[0], &b, 1) != 1 || connect(q, (struct sockaddr *)&ra, rl) ||
		    write(ready[1], "c", 1) != 1)
			die("orphan");
		close(ready[1]), close(go[0]);
		while (read(life[0], &b, 1) > 0) /* until the program is gone */
			;
		_exit(0);
	}
	close(life[0]), close(ready[1]), close(go[0]), close(sp[0]);
	if (waitpid(child, NULL, 0) != child || read(ready[0], &orphan, sizeof(orphan)) != sizeof(orphan))
		die("the orphan");
	at(connected(SOCK_STREAM, &la, ll), 3);
	at(connected(SOCK_DGRAM, &qa, ql), 4);
	at(connected(SOCK_DGRAM, &ga, gl), 5);
	if (unlink(gone))
		die("unlink");
	at(connected(SOCK_DGRAM, &rela, rell), 6);
	at(sp[1], 7);
	at(connected(SOCK_DGRAM, &oka, okl), 8);
	char b;
	if (write(go[1], "g", 1) != 1 || read(ready[0], &b, 1) != 1) /* the orphan connected q to r */
		die("go");
	/* No pipe to the orphan is left but life's (fd 21), whose read end it holds: refused
	 * too, a pipe end outside the tree. */
	close(ready[0]), close(go[1]);
	printf("orphan=%d\n", orphan);
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
	} else if (!strcmp(mode, "sender")) {
		struct sockaddr_un srv, cli;
		socklen_t sl, cl;
		snprintf(name, sizeof(name), "imgtool-unixrefuse-srv-%d", getpid());
		sl = abstract(&srv, name);
		snprintf(name, sizeof(name), "imgtool-unixrefuse-cli-%d", getpid());
		cl = abstract(&cli, name);
		at(bound(SOCK_DGRAM, &srv, sl), 3);
		at(bound(SOCK_DGRAM, &cli, cl), 4);
		at(socket(AF_UNIX, SOCK_DGRAM, 0), 5);
		if (connect(4, (struct sockaddr *)&srv, sl) || send(4, "named", 5, 0) != 5 ||
		    sendto(5, "anon", 4, 0, (struct sockaddr *)&srv, sl) != 4)
			die("send");
	} else if (!strcmp(mode, "extunix")) {
		extunix();
	} else if (!strcmp(mode, "renamed")) {
		char cwd[200];
		if (!getcwd(cwd, sizeof(cwd)) || mkdir("sub", 0700))
			die("renamed");
		memset(&a, 0, sizeof(a));
		a.sun_family = AF_UNIX;
		snprintf(a.sun_path, sizeof(a.sun_path), "%s/abs.sock.tmp", cwd);
		at(bound(SOCK_STREAM, &a, sizeof(a)), 3);
		snprintf(a.sun_path, sizeof(a.sun_path), "rel.sock");
		at(bound(SOCK_DGRAM, &a, sizeof(a)), 4);
		snprintf(a.sun_path, sizeof(a.sun_path), "moved.sock");
		at(bound(SOCK_DGRAM, &a, sizeof(a)), 5);
		if (listen(3, 4) || rename("abs.sock.tmp", "abs.sock") || rename("rel.sock", "rel.sock.old") ||
		    rename("moved.sock", "sub/moved.sock"))
			die("renamed");
	} else if (!strcmp(mode, "chroot")) {
		if (mkdir("croot.d", 0755) || chroot("croot.d") || chdir("/"))
			die("chroot");
		memset(&a, 0, sizeof(a));
		a.sun_family = AF_UNIX;
		snprintf(a.sun_path, sizeof(a.sun_path), "/in.sock");
		at(bound(SOCK_STREAM, &a, sizeof(a)), 3);
		if (listen(3, 4))
			die("listen");
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

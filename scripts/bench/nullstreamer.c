/* nullstreamer: the least an image streamer can do for criu dump --stream, for make
 * bench's section 6: the floor of CRIU's stream mode, against which imgtool stream
 * capture is measured. It listens on DIR/streamer-capture.sock as capture does, writes
 * "ready" to fd 3, takes CRIU's one connection and, for every file CRIU sends, drains
 * the pipe in a thread of its own (CRIU writes several files at once) with the same
 * pipe size capture asks for (4 MiB, else 1 MiB). It keeps nothing.
 *
 *   nullstreamer DIR splice   splice(2) into /dev/null: no byte is copied (CRIU's own cost)
 *   nullstreamer DIR read     read(2) into 1 MiB of memory: the one copy any streamer that
 *                             looks at the bytes (to encrypt them) cannot avoid
 *
 * Exit 0 once CRIU closes the connection and every pipe is drained, having said on
 * stdout how fast the largest file (the pages) came, from its pipe to its end, as
 * capture's summary says it: "largest NAME at X GiB/s". Not a test of anything: no
 * error is recovered from, the protocol is not checked beyond need. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int use_splice;

/* file is one file CRIU sends: its pipe, name, bytes and time. */
struct file {
	int fd;
	char name[256];
	long long bytes;
	double start, end;
};

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *drain(void *arg)
{
	struct file *f = arg;
	ssize_t n;
	if (use_splice) {
		int null = open("/dev/null", O_WRONLY);
		while ((n = splice(f->fd, NULL, null, NULL, 1 << 30, SPLICE_F_MOVE)) > 0)
			f->bytes += n;
		close(null);
	} else {
		char *buf = malloc(1 << 20);
		while ((n = read(f->fd, buf, 1 << 20)) > 0)
			f->bytes += n;
		free(buf);
	}
	f->end = now();
	close(f->fd);
	return NULL;
}

/* readn reads exactly n bytes; 0 at a clean end, -1 otherwise. */
static int readn(int sk, void *p, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(sk, (char *)p + got, n - got);
		if (r <= 0)
			return got == 0 && r == 0 ? 0 : -1;
		got += r;
	}
	return 1;
}

/* recvpipe receives the pipe end sent with one dummy byte. */
static int recvpipe(int sk)
{
	char one, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &one, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	if (recvmsg(sk, &mh, 0) != 1)
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof(fd));
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: nullstreamer DIR splice|read\n");
		return 2;
	}
	use_splice = strcmp(argv[2], "splice") == 0;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/streamer-capture.sock", argv[1]);
	unlink(a.sun_path);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1)) {
		perror("nullstreamer: listen");
		return 1;
	}
	if (write(3, "ready\n", 6) == 6)
		close(3);
	int sk = accept(l, NULL, NULL);
	close(l);
	unlink(a.sun_path);
	static pthread_t th[4096];
	static struct file files[4096];
	int n = 0;
	for (;;) {
		uint32_t len;
		char msg[4096];
		int r = readn(sk, &len, 4);
		if (r == 0)
			break;
		if (r < 0 || len > sizeof(msg) || readn(sk, msg, len) <= 0)
			return 1;
		int fd = recvpipe(sk);
		if (fd < 0 || n == 4096)
			return 1;
		if (fcntl(fd, F_SETPIPE_SZ, 4 << 20) < 0)
			fcntl(fd, F_SETPIPE_SZ, 1 << 20);
		struct file *f = &files[n];
		f->fd = fd;
		f->start = now();
		/* The request is a protobuf whose field 1 is the file name: tag, length, bytes. */
		if (len >= 2 && msg[0] == 0x0a && msg[1] < 128 && 2 + msg[1] <= (int)len)
			snprintf(f->name, sizeof(f->name), "%.*s", msg[1], msg + 2);
		pthread_create(&th[n++], NULL, drain, f);
	}
	struct file *big = NULL;
	for (int i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		if (!big || files[i].bytes > big->bytes)
			big = &files[i];
	}
	if (big && big->end > big->start)
		printf("largest %s at %.2f GiB/s\n", big->name, big->bytes / (big->end - big->start) / (1 << 30));
	return 0;
}

/* locks: file locks the dump refuses even with --file-locks. argv[1] chooses:
 *
 *   maplock   an flock on flock.map and an OFD lock on ofd.map, each file then mapped
 *             and its fd closed: the locks live on through the mappings only
 *   breaking  a write lease on lease.wr that another process (the test) starts to break;
 *             the lease break signal is ignored, so the lease stays in its breaking state
 *   maplease  a write lease on lease.map, which the process also maps
 *
 * It prints "pid=N" once set up, then sleeps. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

static int open_file(const char *name, int flags)
{
	int fd = open(name, flags | O_CREAT, 0600);
	if (fd < 0 || (flags != O_RDONLY && ftruncate(fd, 4096))) {
		perror(name);
		exit(1);
	}
	return fd;
}

static void map(int fd)
{
	if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	signal(SIGIO, SIG_IGN);
	if (!strcmp(mode, "maplock")) {
		int f = open_file("flock.map", O_RDWR), o = open_file("ofd.map", O_RDWR);
		struct flock l = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
		if (flock(f, LOCK_EX) || fcntl(o, F_OFD_SETLK, &l)) {
			perror("lock");
			return 1;
		}
		map(f);
		map(o);
		close(f);
		close(o);
	} else if (!strcmp(mode, "breaking")) {
		int w = open_file("lease.wr", O_WRONLY);
		if (fcntl(w, F_SETLEASE, F_WRLCK)) {
			perror("F_SETLEASE");
			return 1;
		}
	} else if (!strcmp(mode, "maplease")) {
		int m = open_file("lease.map", O_RDWR);
		map(m);
		if (fcntl(m, F_SETLEASE, F_WRLCK)) {
			perror("F_SETLEASE");
			return 1;
		}
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}

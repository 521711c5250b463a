/* scale: the targets of make bench's scaling section (scripts/bench.sh, section 7).
 *   scale threads N READY   one process, N threads sleeping (plus the main thread)
 *   scale tree N READY      a parent and N-1 sleeping children (a session of its own)
 *   scale maps N READY      N private anonymous one-page mappings, each touched, the
 *                           protections alternating (rw, r) so that none merge
 *   scale big MIB READY     one process with MIB MiB of touched anonymous memory
 * Once all of it exists, READY is created (and closed: no fd of the target is a regular
 * file, so a restore has no file size to check) and the target sleeps for ever. stdin,
 * stdout and stderr are expected on /dev/null. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void forever(void)
{
	for (;;)
		pause();
}

static void *sleeper(void *arg)
{
	(void)arg;
	forever();
	return NULL;
}

static void ready(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) { perror(path); exit(1); }
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 4) { fprintf(stderr, "usage: scale threads|tree|maps|big N READY\n"); return 2; }
	long n = atol(argv[2]);
	if (!strcmp(argv[1], "threads")) {
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 64 << 10);
		for (long i = 0; i < n; i++) {
			pthread_t t;
			if (pthread_create(&t, &a, sleeper, NULL)) { perror("pthread_create"); return 1; }
		}
	} else if (!strcmp(argv[1], "tree")) {
		int p[2];
		if (pipe(p)) { perror("pipe"); return 1; }
		for (long i = 1; i < n; i++) {
			pid_t c = fork();
			if (c < 0) { perror("fork"); return 1; }
			if (c == 0) {
				close(p[0]);
				if (write(p[1], "x", 1) != 1) _exit(1);
				close(p[1]);
				forever();
			}
		}
		close(p[1]);
		char b[256];
		long got = 0;
		ssize_t r;
		while (got < n - 1 && (r = read(p[0], b, sizeof b)) > 0)
			got += r;
		close(p[0]);
	} else if (!strcmp(argv[1], "maps")) {
		for (long i = 0; i < n; i++) {
			char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (m == MAP_FAILED) { perror("mmap"); return 1; }
			m[0] = (char)i;
			if (i % 2 && mprotect(m, 4096, PROT_READ)) { perror("mprotect"); return 1; }
		}
	} else if (!strcmp(argv[1], "big")) {
		size_t sz = (size_t)n << 20;
		unsigned char *m = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED) { perror("mmap"); return 1; }
		/* Every page different (a counter and a PRNG word per 64 bytes): nothing a
		 * dump could skip or dedupe. */
		unsigned long x = 0x9E3779B97F4A7C15ul;
		for (size_t i = 0; i < sz; i += 64) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			memcpy(m + i, &x, sizeof x);
		}
	} else {
		fprintf(stderr, "scale: unknown kind %s\n", argv[1]);
		return 2;
	}
	ready(argv[3]);
	forever();
}

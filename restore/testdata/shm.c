/* shm: a parent and a child sharing memory the two ways CRIU saves as shmem objects.
 *
 * - 1 MiB of MAP_SHARED|MAP_ANONYMOUS memory, mapped before the fork: every page starts
 *   with "SHM-PAGE-<n>"; the parent counts in word 0 of the last page, the child in word 1.
 * - a memfd (fd 3 in the parent, held open, and mapped MAP_SHARED in both): the child
 *   copies its count into it through its mapping, the parent reads it back through its fd.
 *
 * Each process prints a line every 50 ms with its own count and what it sees of the other's;
 * a line with "BAD" means a page lost its content. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/mman.h>

#define SHM_SIZE (1 << 20)
#define PAGE 4096

static int pages_ok(const char *sh)
{
	char want[32];
	for (int i = 0; i < SHM_SIZE / PAGE - 1; i++) {
		int n = snprintf(want, sizeof(want), "SHM-PAGE-%d", i);
		if (memcmp(sh + i * PAGE, want, n + 1) != 0)
			return 0;
	}
	return 1;
}

int main(void)
{
	char *sh = mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) { perror("mmap shared"); return 1; }
	for (int i = 0; i < SHM_SIZE / PAGE - 1; i++)
		snprintf(sh + i * PAGE, 32, "SHM-PAGE-%d", i);
	volatile unsigned long *counts = (volatile unsigned long *)(sh + SHM_SIZE - PAGE);

	int mfd = memfd_create("imgtool-shm-test", 0);
	if (mfd != 3) { fprintf(stderr, "memfd is fd %d, want 3\n", mfd); return 1; }
	if (ftruncate(mfd, 65536)) { perror("ftruncate"); return 1; }
	volatile unsigned long *mm = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (mm == MAP_FAILED) { perror("mmap memfd"); return 1; }
	strcpy((char *)mm + 8, "MEMFD-CONTENT");

	struct timespec ts = { 0, 50 * 1000 * 1000 };
	pid_t child = fork();
	if (child < 0) { perror("fork"); return 1; }
	for (;;) {
		const char *ok = pages_ok(sh) ? "ok" : "BAD";
		if (child == 0) {
			unsigned long n = ++counts[1];
			mm[0] = n;
			printf("child pid=%d n=%lu parent=%lu pages=%s\n", getpid(), n, counts[0], ok);
		} else {
			unsigned long n = ++counts[0], via_fd = 0;
			char text[16] = "";
			if (pread(mfd, &via_fd, sizeof(via_fd), 0) != sizeof(via_fd) ||
			    pread(mfd, text, 13, 8) != 13)
				ok = "BAD";
			printf("parent pid=%d n=%lu child=%lu memfd=%lu text=%s pages=%s\n", getpid(), n,
			       counts[1], via_fd, text, ok);
		}
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
}

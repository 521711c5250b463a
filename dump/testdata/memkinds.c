/* memkinds: one of each kind of memory the dump handles, each holding a marker string:
 * anonymous private RW, read-only and PROT_NONE anonymous areas with data, a private file
 * mapping with one page copied on write, MAP_SHARED|MAP_ANONYMOUS memory, a memfd mapped
 * shared (and kept open as an fd), and a thread-less signal handler with an alternate stack.
 * Prints the addresses, then loops. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void on_usr1(int s) { (void)s; }

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : ".";
	char *rw = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	strcpy(rw + 4096, "MEMKINDS-ANON-RW");
	char *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	strcpy(ro, "MEMKINDS-ANON-RO");
	mprotect(ro, 4096, PROT_READ);
	char *none = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	strcpy(none + 4096, "MEMKINDS-ANON-NONE");
	mprotect(none, 2 * 4096, PROT_NONE);

	char path[4096];
	snprintf(path, sizeof(path), "%s/data.bin", dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	char page[4096];
	memset(page, 'f', sizeof(page));
	for (int i = 0; i < 4; i++)
		if (write(fd, page, sizeof(page)) != sizeof(page))
			return 1;
	char *fm = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	volatile char c = fm[0]; /* page 0 read only: stays a file page */
	(void)c;
	strcpy(fm + 2 * 4096, "MEMKINDS-FILE-COW"); /* page 2 copied on write */
	close(fd);

	char *sh = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	strcpy(sh + 3 * 4096, "MEMKINDS-SHARED-ANON");

	int mfd = memfd_create("memkinds-memfd", 0);
	if (ftruncate(mfd, 4 * 4096))
		return 1;
	char *mm = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	strcpy(mm + 4096, "MEMKINDS-MEMFD");

	stack_t ss = { .ss_sp = malloc(65536), .ss_size = 65536 };
	sigaltstack(&ss, NULL);
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_ONSTACK | SA_RESTART };
	sigaddset(&sa.sa_mask, SIGUSR2);
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t blk;
	sigemptyset(&blk);
	sigaddset(&blk, SIGHUP);
	sigprocmask(SIG_BLOCK, &blk, NULL);

	printf("pid=%d rw=%p ro=%p none=%p file=%p shared=%p memfd=%p mfd=%d alt=%p\n", getpid(), rw + 4096, ro,
	       none + 4096, fm + 2 * 4096, sh + 3 * 4096, mm + 4096, mfd, ss.ss_sp);
	fflush(stdout);
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	for (unsigned long n = 0;; n++) {
		printf("n=%lu\n", n);
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
}

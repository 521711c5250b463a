/* hugetlb: a hugetlb mapping (MAP_HUGETLB) whose page was never touched, so that
 * nothing in the process's status counts it: dump refuses it, before the tree is
 * touched, all the same. */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include <sys/mman.h>

int main(void)
{
	void *p = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	printf("pid=%d area=%p\n", getpid(), p);
	fflush(stdout);
	for (;;)
		pause();
}

/* lockonfault: an area locked with mlock2(MLOCK_ONFAULT), which vma_entry cannot record
 * (dump refuses it). */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include <sys/mman.h>

int main(void)
{
	char *p = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || mlock2(p, 16 * 4096, MLOCK_ONFAULT)) {
		perror("mlock2");
		return 1;
	}
	p[0] = 1;
	printf("pid=%d area=%p\n", getpid(), (void *)p);
	fflush(stdout);
	for (;;)
		pause();
}

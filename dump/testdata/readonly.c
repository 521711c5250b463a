/* readonly: memory that was only ever read maps the kernel's shared zero page, and a
 * dump must not save it (as CRIU does not). Area a (16 MiB) is read page by page; area b
 * (8 MiB, 2 MiB aligned, MADV_HUGEPAGE) too, so that it may map the huge zero page; one
 * page of area c is written. It prints the three addresses and its pid. */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define MB (1ul << 20)

static volatile unsigned long sum;

static unsigned char *area(size_t size, int huge)
{
	unsigned char *m = mmap(NULL, size + 2 * MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED) {
		perror("mmap");
		_exit(1);
	}
	m += (2 * MB - (uintptr_t)m % (2 * MB)) % (2 * MB);
	if (huge)
		madvise(m, size, MADV_HUGEPAGE);
	return m;
}

int main(void)
{
	unsigned char *a = area(16 * MB, 0), *b = area(8 * MB, 1), *c = area(MB, 0);
	for (size_t i = 0; i < 16 * MB; i += 4096)
		sum += a[i];
	for (size_t i = 0; i < 8 * MB; i += 4096)
		sum += b[i];
	c[4096] = 42;
	printf("a=%p b=%p c=%p\n", (void *)a, (void *)b, (void *)c);
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}

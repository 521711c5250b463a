/* amx: a thread whose AMX tile registers hold data (XSAVE components 17 and 18, which a
 * CRIU core image has no field for). The Go test checks that the CPU and the kernel
 * offer AMX before it runs this. The instructions are spelled as bytes: no assembler
 * flag is needed. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

struct tilecfg {
	unsigned char palette, start_row, reserved[14];
	unsigned short colsb[16];
	unsigned char rows[16];
};

static struct tilecfg cfg __attribute__((aligned(64)));
static unsigned char data[16 * 64] __attribute__((aligned(64)));

int main(void)
{
	if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)) {
		perror("arch_prctl(ARCH_REQ_XCOMP_PERM)");
		return 1;
	}
	memset(data, 0x5a, sizeof data);
	cfg.palette = 1;
	cfg.colsb[0] = 64;
	cfg.rows[0] = 16;
	/* ldtilecfg (%rdi) */
	asm volatile(".byte 0xc4,0xe2,0x78,0x49,0x07" : : "D"(&cfg) : "memory");
	/* tileloadd (%rax,%rdx,1), %tmm0 */
	asm volatile(".byte 0xc4,0xe2,0x7b,0x4b,0x04,0x10" : : "a"(data), "d"(64L) : "memory");
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}

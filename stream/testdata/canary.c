/* canary: prints pid=PID, keeps a secret string in its memory (heap and stack) and prints a
 * counter to stdout, one line every 50 ms, so that a test can tell it was
 * restored (the counter carries on) and that the secret never reached a file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *secret = argc > 1 ? argv[1] : "CANARY";
	char *heap = malloc(4096);
	char stack[256];
	unsigned long i;

	if (!heap)
		return 1;
	/* Many copies, so that no page holding one can be skipped. */
	for (i = 0; i + strlen(secret) < 4096; i += strlen(secret))
		memcpy(heap + i, secret, strlen(secret));
	snprintf(stack, sizeof(stack), "%s", secret);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("pid=%d\n", getpid());
	for (i = 0;; i++) {
		printf("count %lu %c\n", i, heap[0] ^ stack[0] ? '!' : '.');
		usleep(50000);
	}
}

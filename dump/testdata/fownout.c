/* fownout: fd 3 and 4 are a pipe; the read end's owner (F_SETOWN) is our parent, outside
 * the tree, or with argument "self" ourselves. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int p[2];
	pid_t owner = argc > 1 && !strcmp(argv[1], "self") ? getpid() : getppid();
	if (pipe(p) || p[0] != 3 || fcntl(p[0], F_SETOWN, owner)) {
		perror("pipe/F_SETOWN");
		return 1;
	}
	printf("pid=%d owner=%d\n", getpid(), owner);
	fflush(stdout);
	for (;;)
		pause();
}

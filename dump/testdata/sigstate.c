/* sigstate: a process whose signal state a dump must leave as it was: SIGTRAP's action
 * (argv[1]: "dfl", "handler" or "ignore"), a SIGUSR1 handler, and SIGUSR2 blocked. Prints
 * "ready", then every 20 ms a line with the SIGTRAP and SIGUSR1 actions and the mask. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void handler(int sig) { (void)sig; }

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = handler;
	sigaction(SIGUSR1, &sa, NULL);
	if (argc > 1 && !strcmp(argv[1], "handler"))
		sigaction(SIGTRAP, &sa, NULL);
	if (argc > 1 && !strcmp(argv[1], "ignore"))
		signal(SIGTRAP, SIG_IGN);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR2);
	sigprocmask(SIG_BLOCK, &m, NULL);
	printf("ready\n");
	for (;;) {
		struct sigaction trap, usr1;
		sigset_t cur;
		sigaction(SIGTRAP, NULL, &trap);
		sigaction(SIGUSR1, NULL, &usr1);
		sigprocmask(SIG_BLOCK, NULL, &cur);
		printf("state trap=%p usr1=%p trapped=%d usr2=%d pending-trap=%d\n", (void *)trap.sa_handler,
		       (void *)usr1.sa_handler, sigismember(&cur, SIGTRAP), sigismember(&cur, SIGUSR2),
		       ({ sigset_t p; sigpending(&p); sigismember(&p, SIGTRAP); }));
		usleep(20000);
	}
}

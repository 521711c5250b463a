/* steady: a target for interruption tests, which checks itself. Its main thread ticks
 * every 2 ms and verifies its signal mask and one page of its 128 MiB of memory per tick;
 * a second thread sleeps in nanosleep (the restart_syscall path), a third blocks in read()
 * on an empty pipe (the ERESTARTSYS path). Anything unexpected (a changed mask or page, a
 * call returning what it cannot) is printed as "BROKEN ..." and ends it with status 3. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SZ (128ul << 20)
#define PAGE 4096ul

static uint64_t *mem;
static int pfd[2];
static sigset_t want;
static pthread_barrier_t started; /* pid= is printed once every thread runs its own code */

static void broken(const char *what, long v)
{
	printf("BROKEN %s %ld\n", what, v);
	fflush(stdout);
	_exit(3);
}

static void check_mask(const char *who)
{
	sigset_t cur;
	pthread_sigmask(SIG_SETMASK, NULL, &cur);
	for (int s = 1; s < 65; s++)
		if (sigismember(&cur, s) != sigismember(&want, s))
			broken(who, s);
}

static void *sleeper(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&started);
	for (;;) {
		struct timespec ts = { 0, 300000000 };
		if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
			broken("nanosleep errno", errno);
		check_mask("sleeper mask");
	}
}

static void *reader(void *arg)
{
	(void)arg;
	char c;
	pthread_barrier_wait(&started);
	ssize_t n = read(pfd[0], &c, 1);
	broken(n < 0 ? "read errno" : "read returned", n < 0 ? errno : n);
	return NULL;
}

static uint64_t pattern(size_t i) { return i * 0x9E3779B97F4A7C15ull + 1; }

int main(void)
{
	sigemptyset(&want);
	sigaddset(&want, SIGUSR1);
	sigaddset(&want, SIGRTMIN + 3);
	pthread_sigmask(SIG_SETMASK, &want, NULL);
	mem = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		broken("mmap", errno);
	for (size_t i = 0; i < SZ / 8; i++)
		mem[i] = pattern(i);
	if (pipe(pfd) != 0)
		broken("pipe", errno);
	pthread_t a, b;
	pthread_barrier_init(&started, NULL, 3);
	pthread_create(&a, NULL, sleeper, NULL);
	pthread_create(&b, NULL, reader, NULL);
	pthread_barrier_wait(&started);
	usleep(20000); /* the threads reach their sleeps */
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (unsigned long n = 0;; n++) {
		check_mask("main mask");
		size_t page = n % (SZ / PAGE), w = page * PAGE / 8;
		for (size_t i = w; i < w + PAGE / 8; i++)
			if (mem[i] != pattern(i))
				broken("memory word", (long)i);
		if (n % 50 == 0) {
			printf("tick %lu\n", n);
			fflush(stdout);
		}
		struct timespec ts = { 0, 2000000 };
		if (nanosleep(&ts, NULL) != 0 && errno != EINTR)
			broken("main nanosleep errno", errno);
	}
}

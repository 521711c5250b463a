/* polls: eventfd, timerfd, signalfd and epoll, set up before a dump and checked after the
 * restore. One state per run, chosen by argv[1]; argv[2] "lenient" allows an absolute timer
 * to fire up to a second early (CRIU 4.2's restore re-arms it from the clock's seconds only):
 *
 *   eventfd   a semaphore eventfd (counter 3, nonblocking) and a plain one (counter 7)
 *   timerfd   a relative periodic timer (100 ms, expired and not read at the dump), an
 *             absolute one-shot CLOCK_REALTIME timer 2 s ahead, a one-shot timer that expired
 *             before the dump and was not read
 *   signalfd  SIGUSR2 blocked, a nonblocking signalfd for it; the test sends SIGUSR2 after the
 *             restore
 *   epoll     an epoll over a pipe, an eventfd, a timerfd and another epoll (itself over an
 *             eventfd), each with its own data
 *   shared    an epoll over an eventfd shared by the process and its child, which waits in it
 *   inotify   a nonblocking inotify with watch 1 on a folder (IN_CREATE), watch 3 on a file
 *             (IN_MODIFY | IN_ONESHOT; watch 2 was removed): the events after the restore
 *             come with those numbers, and the next watch added gets number 4
 *   all       every state above but shared, in one process (the CRIU interop program)
 *
 * argv[2] "nosem" expects the semaphore eventfd to come back as a plain counter (CRIU 4.2
 * neither records EFD_SEMAPHORE nor restores imgtool's record of it); "lenient,nosem" both.
 *
 * The program sets the state, prints "ready", waits for SIGUSR1 (sent after the restore),
 * checks and prints "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#include "check.h"
static int lenient, nosem;

static double now(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- eventfd --- */
static int sem, plain;

static void set_eventfd(void)
{
	sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
	plain = eventfd(7, 0);
}

static int check_eventfd(void)
{
	uint64_t v;
	CHECK(fcntl(sem, F_GETFL) & O_NONBLOCK, "semaphore eventfd lost O_NONBLOCK");
	CHECK(fcntl(sem, F_GETFD) & FD_CLOEXEC, "semaphore eventfd lost FD_CLOEXEC");
	CHECK(!(fcntl(plain, F_GETFL) & O_NONBLOCK), "plain eventfd got O_NONBLOCK");
	if (nosem) { /* restored from a dump that does not record the mode: a plain counter */
		CHECK(read(sem, &v, 8) == 8 && v == 3, "eventfd gave %llu, not 3", (unsigned long long)v);
		goto plain;
	}
	for (int i = 0; i < 3; i++) {
		CHECK(read(sem, &v, 8) == 8, "semaphore read %d: %s", i, strerror(errno));
		CHECK(v == 1, "semaphore read %d gave %llu, not 1 (not a semaphore)", i, (unsigned long long)v);
	}
	CHECK(read(sem, &v, 8) < 0 && errno == EAGAIN, "semaphore eventfd held more than 3");
plain:
	CHECK(read(plain, &v, 8) == 8 && v == 7, "plain eventfd gave %llu, not 7", (unsigned long long)v);
	return 1;
}

/* --- timerfd --- */
static int periodic, absolute, expired;
static double abs_at;

static void set_timerfd(void)
{
	struct itimerspec its = { { 0, 100000000 }, { 0, 100000000 } };
	periodic = timerfd_create(CLOCK_MONOTONIC, 0);
	timerfd_settime(periodic, 0, &its, NULL);
	absolute = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += 2;
	abs_at = t.tv_sec + t.tv_nsec / 1e9;
	struct itimerspec a = { { 0, 0 }, t };
	timerfd_settime(absolute, TFD_TIMER_ABSTIME, &a, NULL);
	expired = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec e = { { 0, 0 }, { 0, 1000000 } };
	timerfd_settime(expired, 0, &e, NULL);
	usleep(150000); /* the periodic timer has expired, unread: the kernel moves it on only when read */
}

static int check_timerfd(void)
{
	uint64_t n;
	struct itimerspec its;
	CHECK(read(expired, &n, 8) == 8 && n == 1, "the expired timer's unread expiry is lost");
	CHECK(read(expired, &n, 8) < 0 && errno == EAGAIN, "the expired timer fired again");
	timerfd_gettime(expired, &its);
	CHECK(!its.it_value.tv_sec && !its.it_value.tv_nsec, "the expired timer is armed again");
	timerfd_gettime(periodic, &its);
	CHECK(its.it_interval.tv_sec == 0 && its.it_interval.tv_nsec == 100000000, "periodic interval %ld.%09ld",
	      (long)its.it_interval.tv_sec, its.it_interval.tv_nsec);
	CHECK(read(periodic, &n, 8) == 8 && n >= 1, "periodic timer: no ticks");
	CHECK(read(periodic, &n, 8) == 8 && n == 1, "periodic timer: %llu ticks at once", (unsigned long long)n);
	double t0 = now(CLOCK_MONOTONIC);
	for (int i = 0; i < 3; i++)
		CHECK(read(periodic, &n, 8) == 8 && n == 1, "periodic timer: %llu ticks at once", (unsigned long long)n);
	double dt = now(CLOCK_MONOTONIC) - t0;
	/* 0.3 s, give or take how late this thread ran after the reads (a loaded machine):
	 * a wrong interval (1 s, 10 ms) is far out of these bounds. */
	CHECK(dt > 0.15 && dt < 0.9, "3 periods took %.3f s, not 0.3", dt);
	timerfd_gettime(absolute, &its);
	CHECK(its.it_value.tv_sec || its.it_value.tv_nsec, "the absolute timer is not armed");
	int fl = fcntl(absolute, F_GETFL);
	fcntl(absolute, F_SETFL, fl & ~O_NONBLOCK);
	CHECK(read(absolute, &n, 8) == 8 && n == 1, "absolute timer: read");
	double late = now(CLOCK_REALTIME) - abs_at;
	CHECK(late >= (lenient ? -1.0 : 0), "the absolute timer fired %.3f s early", -late);
	CHECK(late < 3, "the absolute timer fired %.3f s late", late);
	return 1;
}

/* --- signalfd --- */
static int sfd;

static void set_signalfd(void)
{
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGUSR2);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	sfd = signalfd(-1, &ss, SFD_NONBLOCK);
}

static int check_signalfd(void)
{
	struct signalfd_siginfo si;
	for (int i = 0; i < 200; i++) { /* the test sent SIGUSR2 before SIGUSR1 */
		ssize_t n = read(sfd, &si, sizeof(si));
		if (n == sizeof(si)) {
			CHECK(si.ssi_signo == SIGUSR2, "signalfd read signal %u", si.ssi_signo);
			CHECK(fcntl(sfd, F_GETFL) & O_NONBLOCK, "signalfd lost O_NONBLOCK");
			return 1;
		}
		CHECK(errno == EAGAIN, "signalfd read: %s", strerror(errno));
		usleep(10000);
	}
	CHECK(0, "no SIGUSR2 through the signalfd");
}

/* --- epoll --- */
static int ep, inner, pr[2], pefd, ptfd, iefd;

static void set_epoll(void)
{
	struct epoll_event ev;
	pipe(pr);
	pefd = eventfd(0, EFD_NONBLOCK);
	ptfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	iefd = eventfd(0, EFD_NONBLOCK);
	ep = epoll_create1(EPOLL_CLOEXEC);
	inner = epoll_create1(0);
	ev.events = EPOLLIN, ev.data.u64 = 0x1111000000001111ULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, pr[0], &ev);
	ev.events = EPOLLIN | EPOLLET, ev.data.u64 = 0x2222;
	epoll_ctl(ep, EPOLL_CTL_ADD, pefd, &ev);
	ev.events = EPOLLIN, ev.data.u64 = 0x3333;
	epoll_ctl(ep, EPOLL_CTL_ADD, ptfd, &ev);
	ev.events = EPOLLIN, ev.data.u64 = 0x4444;
	epoll_ctl(ep, EPOLL_CTL_ADD, inner, &ev);
	ev.events = EPOLLIN, ev.data.u64 = 0x5555;
	epoll_ctl(inner, EPOLL_CTL_ADD, iefd, &ev);
}

/* wait1 waits for exactly one event on ep and returns its data, or 0. */
static uint64_t wait1(int e, int ms)
{
	struct epoll_event evs[4];
	int n = epoll_wait(e, evs, 4, ms);
	return n == 1 ? evs[0].data.u64 : n == 0 ? 0 : ~0ULL;
}

static int check_epoll(void)
{
	uint64_t v = 1, d;
	char c;
	CHECK((d = wait1(ep, 0)) == 0, "epoll ready before anything happened: %#llx", (unsigned long long)d);
	CHECK(write(pr[1], "x", 1) == 1, "pipe write");
	CHECK((d = wait1(ep, 1000)) == 0x1111000000001111ULL, "pipe: epoll gave %#llx", (unsigned long long)d);
	CHECK(read(pr[0], &c, 1) == 1, "pipe read");
	CHECK(write(pefd, &v, 8) == 8, "eventfd write");
	CHECK((d = wait1(ep, 1000)) == 0x2222, "eventfd: epoll gave %#llx", (unsigned long long)d);
	CHECK((d = wait1(ep, 0)) == 0, "edge-triggered eventfd reported twice: %#llx", (unsigned long long)d);
	CHECK(read(pefd, &v, 8) == 8, "eventfd read");
	struct itimerspec its = { { 0, 0 }, { 0, 50000000 } };
	timerfd_settime(ptfd, 0, &its, NULL);
	CHECK((d = wait1(ep, 1000)) == 0x3333, "timerfd: epoll gave %#llx", (unsigned long long)d);
	CHECK(read(ptfd, &v, 8) == 8, "timerfd read");
	v = 1;
	CHECK(write(iefd, &v, 8) == 8, "inner eventfd write");
	CHECK((d = wait1(ep, 1000)) == 0x4444, "nested epoll: outer epoll gave %#llx", (unsigned long long)d);
	CHECK((d = wait1(inner, 0)) == 0x5555, "nested epoll: inner epoll gave %#llx", (unsigned long long)d);
	CHECK(read(iefd, &v, 8) == 8, "inner eventfd read");
	struct epoll_event ev = { .events = EPOLLOUT, .data.u64 = 0x6666 };
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, pefd, &ev) == 0, "EPOLL_CTL_MOD of the eventfd: %s", strerror(errno));
	CHECK((d = wait1(ep, 1000)) == 0x6666, "modified eventfd: epoll gave %#llx", (unsigned long long)d);
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, pr[0], NULL) == 0, "EPOLL_CTL_DEL of the pipe: %s", strerror(errno));
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, pr[0], &ev) == 0, "adding the pipe again: %s", strerror(errno));
	return 1;
}

/* --- shared --- */
static int sh_ep, sh_efd, child;

static void set_shared(void)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x7777 };
	sh_efd = eventfd(0, EFD_NONBLOCK);
	sh_ep = epoll_create1(0);
	epoll_ctl(sh_ep, EPOLL_CTL_ADD, sh_efd, &ev);
	child = fork();
	if (child == 0) {
		struct epoll_event got;
		int n;
		do
			n = epoll_wait(sh_ep, &got, 1, -1);
		while (n < 0 && errno == EINTR);
		if (n != 1 || got.data.u64 != 0x7777)
			_exit(1);
		ev.events = EPOLLIN, ev.data.u64 = 0x8888;
		_exit(epoll_ctl(sh_ep, EPOLL_CTL_MOD, sh_efd, &ev) ? 2 : 0);
	}
}

static int check_shared(void)
{
	uint64_t v = 1;
	int st;
	CHECK(write(sh_efd, &v, 8) == 8, "eventfd write");
	for (int i = 0; i < 300 && waitpid(child, &st, WNOHANG) == 0; i++)
		usleep(10000);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child's wait in the shared epoll: status %#x", st);
	struct epoll_event got;
	CHECK(epoll_wait(sh_ep, &got, 1, 0) == 1 && got.data.u64 == 0x8888, "the parent does not see the child's change");
	return 1;
}

/* --- inotify --- */
#include <sys/inotify.h>

static int ino_fd;

static void set_inotify(void)
{
	mkdir("watched.d", 0755);
	close(open("watched.f", O_CREAT | O_WRONLY, 0644));
	close(open("other.f", O_CREAT | O_WRONLY, 0644));
	ino_fd = inotify_init1(IN_NONBLOCK);
	int w1 = inotify_add_watch(ino_fd, "watched.d", IN_CREATE);
	int w2 = inotify_add_watch(ino_fd, "other.f", IN_MODIFY);
	inotify_rm_watch(ino_fd, w2);
	int w3 = inotify_add_watch(ino_fd, "watched.f", IN_MODIFY | IN_ONESHOT);
	char buf[256];
	while (read(ino_fd, buf, sizeof(buf)) > 0) /* IN_IGNORED of watch 2: read, the queue empty */
		;
	if (w1 != 1 || w2 != 2 || w3 != 3)
		printf("FAIL before the dump: watches %d %d %d\n", w1, w2, w3);
}

static int check_inotify(void)
{
	char buf[4096] __attribute__((aligned(8)));
	CHECK(read(ino_fd, buf, sizeof(buf)) < 0 && errno == EAGAIN, "events queued after the restore");
	close(open("watched.d/new", O_CREAT | O_WRONLY, 0644));
	int fd = open("watched.f", O_WRONLY | O_APPEND);
	CHECK(fd >= 0 && write(fd, "x", 1) == 1, "writing watched.f");
	close(fd);
	ssize_t n = read(ino_fd, buf, sizeof(buf));
	int created = 0, modified = 0;
	for (char *p = buf; n > 0 && p < buf + n;) {
		struct inotify_event *e = (struct inotify_event *)p;
		if (e->wd == 1 && (e->mask & IN_CREATE) && !strcmp(e->name, "new"))
			created = 1;
		if (e->wd == 3 && (e->mask & IN_MODIFY))
			modified = 1;
		p += sizeof(*e) + e->len;
	}
	CHECK(created && modified, "events: created %d (watch 1), modified %d (watch 3)", created, modified);
	CHECK(inotify_add_watch(ino_fd, "other.f", IN_MODIFY) == 4, "the next watch is not number 4");
	return 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "all";
	int all = !strcmp(mode, "all");
	lenient = argc > 2 && strstr(argv[2], "lenient");
	nosem = argc > 2 && strstr(argv[2], "nosem");
	signal(SIGUSR1, on_usr1);
	if (all || !strcmp(mode, "eventfd"))
		set_eventfd();
	if (all || !strcmp(mode, "timerfd"))
		set_timerfd();
	if (all || !strcmp(mode, "signalfd"))
		set_signalfd();
	if (all || !strcmp(mode, "epoll"))
		set_epoll();
	if (!strcmp(mode, "shared"))
		set_shared();
	if (all || !strcmp(mode, "inotify"))
		set_inotify();
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	while (!go) /* polled: after a restore, a signal may arrive before pause() is re-entered */
		usleep(10000);
	int ok = 1;
	if (ok && (all || !strcmp(mode, "eventfd")))
		ok = check_eventfd();
	if (ok && (all || !strcmp(mode, "timerfd")))
		ok = check_timerfd();
	if (ok && (all || !strcmp(mode, "signalfd")))
		ok = check_signalfd();
	if (ok && (all || !strcmp(mode, "epoll")))
		ok = check_epoll();
	if (ok && !strcmp(mode, "shared"))
		ok = check_shared();
	if (ok && (all || !strcmp(mode, "inotify")))
		ok = check_inotify();
	if (ok)
		printf("ok\n");
	else
		printf("FAIL: %s\n", why);
	fflush(stdout);
	for (;;)
		pause();
}

/* states: process states a dump used to refuse. One per run, chosen by argv[1]:
 *
 *   zombie   two children that ended and were not reaped: one exited with status 3, one
 *            killed by SIGTERM (zombie00)
 *   timers   POSIX timers (timer_create) with ids 1 and 3 (0 and 2 deleted): a periodic
 *            CLOCK_MONOTONIC timer signalling SIGRTMIN with sival 42, a one-shot
 *            CLOCK_REALTIME hour, a SIGEV_THREAD_ID timer to the main thread, a disarmed one
 *            (posix_timers)
 *   stopped  a child stopped by SIGSTOP (job control) (stopped)
 *   stopped-pending  the same, sent SIGSTOP again once stopped, to the process and to the
 *            thread: both stay pending (stopped01, stopped02, stopped12)
 *   seccomp  seccomp filters: getppid fails with EPERM in both threads (installed with
 *            TSYNC), getpgrp with EACCES in the main thread only (seccomp_filter)
 *   seccomp-tsync  one filter on both threads (TSYNC): afterwards another TSYNC filter
 *            must still be taken (one filter tree), and getppid fails with EPERM in both
 *   seccomp-strict  a child in strict mode (prctl PR_SET_SECCOMP 1) that echoes what it
 *            reads from a pipe (seccomp_strict)
 *   chroot   chrooted into chroot.d, made in its working directory (chroot)
 *   clone-files  a child cloned with CLONE_FILES: it shares the parent's fd table, in
 *            which it opens an fd the parent then uses (fdt_shared)
 *   leaderless-group  a child in a process group whose leader (its sibling, which made
 *            the group and then cloned it with CLONE_PARENT) exited and was reaped
 *            (zombie01, alive)
 *   pidfd    pidfds (as Go's os/exec keeps): of a sleeping child (PIDFD_NONBLOCK, and
 *            a dup of it), of itself, and of a child that exited and was reaped; after
 *            the restore the child is killed and waited for through its pidfd
 *
 * The program sets the state, checks it once, prints "ready pid=N", waits for SIGUSR1
 * (sent after the restore), checks again and prints "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "check.h"
static int after; /* the check after the restore: it may consume state */

static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return '?';
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	p = strrchr(buf, ')');
	return p && p[1] ? p[2] : '?';
}

/* --- zombie --- */
static pid_t exited, killed;

static void set_zombie(void)
{
	siginfo_t si;
	exited = fork();
	if (exited == 0)
		_exit(3);
	killed = fork();
	if (killed == 0) {
		kill(getpid(), SIGTERM);
		for (;;)
			pause();
	}
	waitid(P_PID, exited, &si, WEXITED | WNOWAIT);
	waitid(P_PID, killed, &si, WEXITED | WNOWAIT);
}

static int check_zombie(void)
{
	int st;
	CHECK(proc_state(exited) == 'Z', "child %d is in state %c, not a zombie", exited, proc_state(exited));
	CHECK(proc_state(killed) == 'Z', "child %d is in state %c, not a zombie", killed, proc_state(killed));
	if (!after)
		return 1;
	CHECK(waitpid(exited, &st, WNOHANG) == exited, "waitpid %d: %m", exited);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 3, "child %d: status %#x, want exit 3", exited, st);
	CHECK(waitpid(killed, &st, WNOHANG) == killed, "waitpid %d: %m", killed);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM && !WCOREDUMP(st), "child %d: status %#x, want SIGTERM", killed, st);
	return 1;
}

/* --- timers --- */
static timer_t tperiodic, thour, tthread, toff;
static volatile sig_atomic_t ticks, badval;

static void on_tick(int sig, siginfo_t *si, void *uc)
{
	if (si->si_code != SI_TIMER || si->si_value.sival_int != 42 || si->si_timerid != (int)(long)tperiodic)
		badval = 1;
	ticks++;
}

static void set_timers(void)
{
	struct sigevent ev = {0};
	struct itimerspec its = {0};
	struct sigaction sa = {0};
	timer_t gone1, gone2;
	sa.sa_sigaction = on_tick;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN, &sa, NULL);
	signal(SIGRTMIN + 2, SIG_IGN);

	ev.sigev_notify = SIGEV_NONE;
	timer_create(CLOCK_MONOTONIC, &ev, &gone1); /* 0 */
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN;
	ev.sigev_value.sival_int = 42;
	timer_create(CLOCK_MONOTONIC, &ev, &tperiodic); /* 1 */
	ev.sigev_notify = SIGEV_NONE;
	timer_create(CLOCK_MONOTONIC, &ev, &gone2); /* 2 */
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 1;
	ev.sigev_value.sival_int = 7;
	timer_create(CLOCK_REALTIME, &ev, &thour); /* 3 */
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 2;
	ev._sigev_un._tid = syscall(SYS_gettid);
	timer_create(CLOCK_MONOTONIC, &ev, &tthread); /* 4 */
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 1;
	timer_create(CLOCK_BOOTTIME, &ev, &toff); /* 5 */
	timer_delete(gone1);
	timer_delete(gone2);

	its.it_value.tv_nsec = its.it_interval.tv_nsec = 20 * 1000000;
	timer_settime(tperiodic, 0, &its, NULL);
	memset(&its, 0, sizeof(its));
	its.it_value.tv_sec = 3600;
	timer_settime(thour, 0, &its, NULL);
	its.it_value.tv_sec = 100;
	its.it_interval.tv_sec = 100;
	timer_settime(tthread, 0, &its, NULL);
}

static int check_timers(void)
{
	struct itimerspec its;
	int t0 = ticks;
	struct timespec d = {0, 150 * 1000000};
	CHECK((long)tperiodic == 1 && (long)thour == 3 && (long)tthread == 4 && (long)toff == 5,
	      "timer ids %ld %ld %ld %ld", (long)tperiodic, (long)thour, (long)tthread, (long)toff);
	CHECK(timer_gettime((timer_t)0, &its) < 0 && errno == EINVAL, "deleted timer 0 exists");
	CHECK(timer_gettime((timer_t)2, &its) < 0 && errno == EINVAL, "deleted timer 2 exists");
	CHECK(timer_gettime(tperiodic, &its) == 0, "timer_gettime 1: %m");
	CHECK(its.it_interval.tv_sec == 0 && its.it_interval.tv_nsec == 20000000, "periodic interval %ld.%09ld",
	      its.it_interval.tv_sec, its.it_interval.tv_nsec);
	CHECK(timer_gettime(thour, &its) == 0, "timer_gettime 3: %m");
	CHECK(its.it_interval.tv_sec == 0 && its.it_value.tv_sec > 3000 && its.it_value.tv_sec < 3600,
	      "hour timer: %ld s left, interval %ld", its.it_value.tv_sec, its.it_interval.tv_sec);
	CHECK(timer_gettime(tthread, &its) == 0, "timer_gettime 4: %m");
	CHECK(its.it_interval.tv_sec == 100 && its.it_value.tv_sec > 50 && its.it_value.tv_sec < 100,
	      "thread timer: %ld s left, interval %ld", its.it_value.tv_sec, its.it_interval.tv_sec);
	CHECK(timer_gettime(toff, &its) == 0, "timer_gettime 5: %m");
	CHECK(its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0, "disarmed timer armed");
	/* 3 ticks of 20 ms: in 150 ms on an idle machine; a loaded one gets 2 s (the signals
	 * of a late process merge into overruns) */
	for (int i = 0; i < 15 && ticks - t0 < 3; i++) {
		d = (struct timespec){ 0, 150000000 };
		while (nanosleep(&d, &d) < 0 && errno == EINTR)
			;
	}
	CHECK(ticks - t0 >= 3, "periodic timer: %d ticks in 2 s", ticks - t0);
	CHECK(!badval, "periodic timer: a tick with the wrong si_value or si_timerid");
	return 1;
}

/* --- stopped --- */
static pid_t stopped;

static void set_stopped(void)
{
	int st;
	stopped = fork();
	if (stopped == 0) {
		for (;;)
			pause();
	}
	kill(stopped, SIGSTOP);
	waitpid(stopped, &st, WUNTRACED);
}

static void set_stopped_pending(void)
{
	set_stopped();
	kill(stopped, SIGSTOP);
	syscall(SYS_tkill, stopped, SIGSTOP);
}

static int check_stopped(void)
{
	int st;
	/* A restored child stops once it is scheduled after the restorer lets it go (CRIU
	 * sends it its stop signal last): give it a moment. */
	for (int i = 0; i < 200 && proc_state(stopped) != 'T'; i++)
		usleep(10000);
	CHECK(proc_state(stopped) == 'T', "child %d is in state %c, not stopped", stopped, proc_state(stopped));
	if (!after)
		return 1;
	kill(stopped, SIGCONT);
	CHECK(waitpid(stopped, &st, WCONTINUED) == stopped && WIFCONTINUED(st), "child %d did not continue: %#x", stopped, st);
	usleep(20000);
	CHECK(proc_state(stopped) == 'S', "child %d is in state %c after SIGCONT", stopped, proc_state(stopped));
	return 1;
}

/* --- seccomp --- */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static pid_t strict_child;
static int strict_in, strict_out;
static volatile pid_t second_tid;
static volatile int second_ok = -1, second_go;

/* deny installs a filter making syscall nr fail with errno err; flags for seccomp(2). */
static int deny(int nr, int err, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = 4, .filter = f };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static int denied(long nr, int err) { errno = 0; return syscall(nr) == -1 && errno == err; }

static void *second(void *arg)
{
	(void)arg;
	second_tid = syscall(SYS_gettid);
	for (;;) {
		if (second_go) {
			second_ok = denied(SYS_getppid, EPERM) && syscall(SYS_getpgrp) == getpgrp();
			second_go = 0;
		}
		usleep(10000);
	}
	return NULL;
}

static int seccomp_tsync_mode;

static void set_seccomp(int tsync_only)
{
	pthread_t th;
	seccomp_tsync_mode = tsync_only;
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	pthread_create(&th, NULL, second, NULL);
	while (!second_tid)
		usleep(1000);
	if (deny(SYS_getppid, EPERM, SECCOMP_FILTER_FLAG_TSYNC))
		perror("seccomp tsync");
	if (!tsync_only && deny(SYS_getpgrp, EACCES, 0))
		perror("seccomp");
}

static int status_field(pid_t pid, const char *key)
{
	char path[64], line[256];
	int v = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)) && line[strlen(key)] == ':')
			v = atoi(line + strlen(key) + 1);
	fclose(f);
	return v;
}

static int check_seccomp(void)
{
	CHECK(status_field(getpid(), "Seccomp") == 2, "main thread: seccomp mode %d", status_field(getpid(), "Seccomp"));
	CHECK(denied(SYS_getppid, EPERM), "main thread: getppid not denied");
	if (!seccomp_tsync_mode)
		CHECK(denied(SYS_getpgrp, EACCES), "main thread: getpgrp not denied");
	second_go = 1;
	while (second_go)
		usleep(1000);
	CHECK(second_ok == 1, "second thread: getppid not denied, or getpgrp denied");
	if (seccomp_tsync_mode && after)
		/* One filter tree for both threads: TSYNC works (it fails naming a thread whose
		 * filters are not an ancestor of the caller's). */
		CHECK(deny(SYS_getsid, EPERM, SECCOMP_FILTER_FLAG_TSYNC) == 0, "a new TSYNC filter was refused");
	return 1;
}

static void set_seccomp_strict(void)
{
	int in[2], out[2];
	if (pipe(in) || pipe(out))
		exit(1);
	strict_child = fork();
	if (strict_child == 0) {
		char c;
		close(in[1]);
		close(out[0]);
		prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
		c = '!';
		if (write(out[1], &c, 1) != 1) /* in strict mode now */
			syscall(SYS_exit, 1);
		for (;;) {
			if (read(in[0], &c, 1) != 1)
				syscall(SYS_exit, 1);
			c++;
			if (write(out[1], &c, 1) != 1)
				syscall(SYS_exit, 1);
		}
	}
	close(in[0]);
	close(out[1]);
	strict_in = in[1];
	strict_out = out[0];
	char c;
	if (read(strict_out, &c, 1) != 1 || c != '!')
		exit(1);
}

static int check_seccomp_strict(void)
{
	char c = 'a';
	CHECK(status_field(strict_child, "Seccomp") == 1, "child %d: seccomp mode %d", strict_child, status_field(strict_child, "Seccomp"));
	CHECK(write(strict_in, &c, 1) == 1 && read(strict_out, &c, 1) == 1 && c == 'b', "child %d did not echo", strict_child);
	return 1;
}

/* --- chroot --- */
#include <sys/stat.h>

static struct stat chroot_dir;

static void set_chroot(void)
{
	mkdir("chroot.d", 0755);
	if (stat("chroot.d", &chroot_dir) || chroot("chroot.d") || chdir("/"))
		perror("chroot");
}

static int check_chroot(void)
{
	struct stat root, up;
	CHECK(stat("/", &root) == 0 && root.st_dev == chroot_dir.st_dev && root.st_ino == chroot_dir.st_ino,
	      "/ is not chroot.d");
	CHECK(stat("/..", &up) == 0 && up.st_ino == root.st_ino, "/.. leaves the chroot");
	return 1;
}

/* --- clone-files --- */
#include <sched.h>
#include <linux/kcmp.h>

static pid_t files_child;
static int files_pipe[2];
static volatile int child_fd = -1;
static char files_stack[65536];

static int files_sharer(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static void set_clone_files(void)
{
	if (pipe(files_pipe))
		exit(1);
	files_child = clone(files_sharer, files_stack + sizeof(files_stack), CLONE_FILES | SIGCHLD, NULL);
	if (files_child < 0)
		perror("clone");
}

static int check_clone_files(void)
{
	char c = 0;
	CHECK(syscall(SYS_kcmp, getpid(), files_child, KCMP_FILES, 0, 0) == 0, "child %d does not share the fd table", files_child);
	/* A new fd of the table is seen by both: the pipe's ends work through it. */
	int fd = dup(files_pipe[1]);
	CHECK(fd >= 0 && write(fd, "x", 1) == 1 && read(files_pipe[0], &c, 1) == 1 && c == 'x', "the pipe does not work");
	close(fd);
	return 1;
}

/* --- leaderless-group --- */
static pid_t lg_member, lg_id;

static void set_leaderless_group(void)
{
	int p[2];
	if (pipe(p))
		exit(1);
	lg_id = fork();
	if (lg_id == 0) {
		setpgid(0, 0);
		pid_t m = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
		if (m == 0) {
			for (;;)
				pause();
		}
		if (write(p[1], &m, sizeof(m)) != sizeof(m))
			_exit(1);
		_exit(0);
	}
	if (read(p[0], &lg_member, sizeof(lg_member)) != sizeof(lg_member))
		exit(1);
	waitpid(lg_id, NULL, 0);
}

static int check_leaderless_group(void)
{
	CHECK(getpgid(lg_member) == lg_id, "member %d is in group %d, want %d", lg_member, getpgid(lg_member), lg_id);
	CHECK(kill(lg_id, 0) < 0 && errno == ESRCH, "the group's leader %d exists", lg_id);
	CHECK(waitpid(-1, NULL, WNOHANG | __WALL) == 0, "a child other than the member was there to reap");
	return 1;
}

/* --- pidfd --- */
#include <fcntl.h>
#include <poll.h>
#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

static pid_t pidfd_child;
static int pfd_child, pfd_dup, pfd_self, pfd_dead;

static int pidfd_open(pid_t pid, unsigned flags) { return syscall(SYS_pidfd_open, pid, flags); }

/* fdinfo_pid is the Pid: line of fd's fdinfo (-1 for a reaped process), or -2. */
static int fdinfo_pid(int fd)
{
	char path[64], line[128];
	int pid = -2;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Pid: %d", &pid) == 1)
			break;
	if (f)
		fclose(f);
	return pid;
}

static void set_pidfd(void)
{
	pid_t dead = fork();
	if (dead == 0)
		_exit(7);
	pfd_dead = pidfd_open(dead, 0);
	waitpid(dead, NULL, 0);
	pidfd_child = fork();
	if (pidfd_child == 0) {
		for (;;)
			pause();
	}
	pfd_child = pidfd_open(pidfd_child, PIDFD_NONBLOCK);
	pfd_dup = dup(pfd_child);
	pfd_self = pidfd_open(getpid(), 0);
	if (pfd_dead < 0 || pfd_child < 0 || pfd_dup < 0 || pfd_self < 0)
		perror("pidfd_open");
}

static int check_pidfd(void)
{
	CHECK(fdinfo_pid(pfd_child) == pidfd_child && fdinfo_pid(pfd_dup) == pidfd_child, "the child's pidfd is of %d, not %d",
	      fdinfo_pid(pfd_child), pidfd_child);
	CHECK(fdinfo_pid(pfd_self) == getpid(), "the own pidfd is of %d", fdinfo_pid(pfd_self));
	CHECK(fdinfo_pid(pfd_dead) == -1, "the reaped child's pidfd is of %d", fdinfo_pid(pfd_dead));
	CHECK((fcntl(pfd_child, F_GETFL) & O_NONBLOCK) && !(fcntl(pfd_self, F_GETFL) & O_NONBLOCK), "PIDFD_NONBLOCK: %#o %#o",
	      fcntl(pfd_child, F_GETFL), fcntl(pfd_self, F_GETFL));
	struct stat a, b;
	CHECK(!fstat(pfd_child, &a) && !fstat(pfd_dup, &b) && a.st_ino == b.st_ino, "the dup is another file");
	CHECK(syscall(SYS_pidfd_send_signal, pfd_dead, 0, NULL, 0) < 0 && errno == ESRCH, "the reaped child's pidfd: %s", strerror(errno));
	struct pollfd pf = { pfd_child, POLLIN, 0 };
	CHECK(poll(&pf, 1, 0) == 0, "the live child's pidfd polls readable");
	if (!after)
		return 1;
	siginfo_t si = { 0 };
	CHECK(syscall(SYS_pidfd_send_signal, pfd_child, SIGKILL, NULL, 0) == 0, "pidfd_send_signal: %s", strerror(errno));
	CHECK(poll(&pf, 1, 10000) == 1 && (pf.revents & POLLIN), "the killed child's pidfd does not poll readable");
	CHECK(waitid(P_PIDFD, pfd_child, &si, WEXITED) == 0 && si.si_pid == pidfd_child && si.si_status == SIGKILL,
	      "waitid through the pidfd: %s, pid %d status %d", strerror(errno), si.si_pid, si.si_status);
	return 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	int (*check)(void);
	signal(SIGUSR1, on_usr1);
	if (!strcmp(mode, "zombie")) {
		set_zombie();
		check = check_zombie;
	} else if (!strcmp(mode, "timers")) {
		set_timers();
		check = check_timers;
	} else if (!strcmp(mode, "stopped")) {
		set_stopped();
		check = check_stopped;
	} else if (!strcmp(mode, "stopped-pending")) {
		set_stopped_pending();
		check = check_stopped;
	} else if (!strcmp(mode, "seccomp") || !strcmp(mode, "seccomp-tsync")) {
		set_seccomp(!strcmp(mode, "seccomp-tsync"));
		check = check_seccomp;
	} else if (!strcmp(mode, "leaderless-group")) {
		set_leaderless_group();
		check = check_leaderless_group;
	} else if (!strcmp(mode, "clone-files")) {
		set_clone_files();
		check = check_clone_files;
	} else if (!strcmp(mode, "chroot")) {
		set_chroot();
		check = check_chroot;
	} else if (!strcmp(mode, "pidfd")) {
		set_pidfd();
		check = check_pidfd;
	} else if (!strcmp(mode, "seccomp-strict")) {
		set_seccomp_strict();
		check = check_seccomp_strict;
	} else {
		fprintf(stderr, "usage: states MODE\n");
		return 2;
	}
	if (!check()) {
		printf("FAIL before the dump: %s\n", why);
		return 1;
	}
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	while (!go)
		usleep(10000);
	after = 1;
	if (check())
		printf("ok\n");
	else
		printf("FAIL: %s\n", why);
	fflush(stdout);
	for (;;)
		pause();
}

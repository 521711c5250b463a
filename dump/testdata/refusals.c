/* refusals: a process holding what imgtool dump must refuse, chosen by argv[1]:
 *   locks  a POSIX write lock, an OFD read lock and a flock, on three files
 *   fifo   an open FIFO whose name was deleted (dumped: a ghost FIFO)
 *   files  a child that shares the fd table (clone CLONE_FILES): dumped, not refused
 *   procfile  an open file of /proc (its own maps)
 *   rmdir     an open directory that was removed (dumped: a ghost directory)
 *   devnode   an open character device node that was unlinked
 *   opath     an O_PATH fd (not refused: dumped and restored)
 *   inotifyq  an inotify with an event queued and not read
 *   procdir     its working directory the /proc directory of a child that has exited and
 *               was reaped ("/proc/PID (deleted)", zdtm's unhashed_proc)
 *   inotifyghost  an inotify watching gone.txt, deleted while an fd keeps it open (zdtm's
 *               inotify00)
 *   leaderless  a child in a process group whose leader exited (zdtm's zombie01): dumped;
 *               restore/testdata/states.c's leaderless-group checks its restore
 *   ghostbig    big.bin (2 MiB) open and gone.map (1.5 MiB) mapped, both deleted: over the
 *               default ghost file limit
 *   linkremap   a.txt open, linked as b.txt, then a.txt unlinked: the file has a name, not
 *               the one it was opened by
 *   fanotify    a fanotify group (fanotify_init)
 *   ioprio      its I/O priority set to the idle class (ionice -c3), or, if it had that
 *               already (a test run under ionice -c3), to best-effort level 7
 *   pidfd       pidfds (pidfd_open) of its parent, outside the tree (fd 3), of a child that
 *               exited, not reaped (fd 4), and of its own thread (PIDFD_THREAD, fd 5)
 *   pipes       pipes whose other end is held outside the tree by an orphan (a grandchild
 *               whose parent exited; it prints orphan=PID and exits with this program):
 *               fd 3 a write end (the orphan reads), fd 4 a read end (the orphan writes);
 *               and, dumped: fd 5 a read end whose write end is closed everywhere, fd 6 a
 *               write end a child of the tree reads
 * It prints "pid=N" once set up, then sleeps. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sys/inotify.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

static int open_file(const char *name)
{
	int fd = open(name, O_RDWR | O_CREAT, 0600);
	if (fd < 0 || write(fd, "0123456789", 10) != 10) {
		perror(name);
		exit(1);
	}
	return fd;
}

static int sleeper(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

/* pipes: see the top. */
static void pipes(void)
{
	int out[2], in[2], closed[2], kid[2], ready[2];
	char b;
	if (pipe(out) || pipe(in) || pipe(closed) || pipe(kid) || pipe(ready))
		exit(1);
	pid_t c = fork();
	if (c == 0) {
		if (fork() != 0)
			_exit(0); /* the grandchild is reparented: out of the tree */
		pid_t me = getpid();
		/* It keeps out's read end and in's write end only. */
		close(out[1]), close(in[0]), close(closed[0]), close(closed[1]), close(kid[0]), close(kid[1]), close(ready[0]);
		if (write(ready[1], &me, sizeof(me)) != sizeof(me))
			_exit(1);
		close(ready[1]);
		while (read(out[0], &b, 1) > 0) /* until the program is gone */
			;
		_exit(0);
	}
	pid_t orphan;
	if (c < 0 || waitpid(c, NULL, 0) != c || read(ready[0], &orphan, sizeof(orphan)) != sizeof(orphan))
		exit(1);
	printf("orphan=%d\n", orphan);
	close(out[0]), close(in[1]), close(closed[1]), close(ready[0]), close(ready[1]);
	if (dup2(out[1], 3) != 3 || dup2(in[0], 4) != 4 || dup2(closed[0], 5) != 5 || dup2(kid[1], 6) != 6 ||
	    dup2(kid[0], 7) != 7)
		exit(1);
	for (int fd = 8; fd < 20; fd++)
		close(fd);
	if (fork() == 0) { /* a child of the tree holding the read end of kid only */
		close(3), close(4), close(5), close(6);
		for (;;)
			pause();
	}
	close(7);
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "pipes")) {
		pipes();
	} else if (!strcmp(mode, "locks")) {
		struct flock posix = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 4 };
		if (fcntl(open_file("posix.db"), F_SETLK, &posix)) { perror("F_SETLK"); return 1; }
		struct flock ofd = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 2, .l_len = 2 };
		if (fcntl(open_file("ofd.db"), F_OFD_SETLK, &ofd)) { perror("F_OFD_SETLK"); return 1; }
		if (flock(open_file("flock.db"), LOCK_EX)) { perror("flock"); return 1; }
	} else if (!strcmp(mode, "fifo")) {
		if (mkfifo("gone.fifo", 0600) || open("gone.fifo", O_RDWR) < 0 || unlink("gone.fifo")) {
			perror("fifo");
			return 1;
		}
	} else if (!strcmp(mode, "files")) {
		static char stack[64 << 10];
		if (clone(sleeper, stack + sizeof(stack), CLONE_FILES | SIGCHLD, NULL) < 0) {
			perror("clone");
			return 1;
		}
	} else if (!strcmp(mode, "fanotify")) {
		if (syscall(SYS_fanotify_init, 0, 0) < 0) { perror("fanotify_init"); return 1; }
	} else if (!strcmp(mode, "ioprio")) {
		long idle = 3 << 13, be7 = 2 << 13 | 7; /* IOPRIO_CLASS_IDLE; IOPRIO_CLASS_BE, 7 */
		long was = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
		if (syscall(SYS_ioprio_set, 1, 0, was == idle ? be7 : idle)) {
			perror("ioprio_set");
			return 1;
		}
	} else if (!strcmp(mode, "pidfd")) {
		pid_t z = fork();
		if (z == 0)
			_exit(0);
		if (syscall(SYS_pidfd_open, getppid(), 0) != 3 || syscall(SYS_pidfd_open, z, 0) != 4) {
			perror("pidfd_open");
			return 1;
		}
		if (syscall(SYS_pidfd_open, getpid(), PIDFD_THREAD) != 5) {
			if (errno != EINVAL) {
				perror("pidfd_open PIDFD_THREAD");
				return 1;
			}
			printf("no PIDFD_THREAD\n"); /* before Linux 6.9 */
		}
		siginfo_t si;
		waitid(P_PID, z, &si, WEXITED | WNOWAIT); /* a zombie from now on */
	} else if (!strcmp(mode, "procfile")) {
		if (open("/proc/self/maps", O_RDONLY) < 0) { perror("maps"); return 1; }
	} else if (!strcmp(mode, "rmdir")) {
		if (mkdir("gone.d", 0700) || open("gone.d", O_RDONLY | O_DIRECTORY) < 0 || rmdir("gone.d")) {
			perror("rmdir");
			return 1;
		}
	} else if (!strcmp(mode, "devnode")) {
		if (mknod("null.dev", S_IFCHR | 0600, makedev(1, 3)) || open("null.dev", O_RDWR) < 0 || unlink("null.dev")) {
			perror("devnode");
			return 1;
		}
	} else if (!strcmp(mode, "opath")) {
		if (open_file("plain") < 0 || open("plain", O_PATH) < 0) { perror("O_PATH"); return 1; }
	} else if (!strcmp(mode, "leaderless")) {
		pid_t a = fork();
		if (a == 0) { /* a leads a new group, gives it a sibling member, and exits */
			setpgid(0, 0);
			if (syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0) == 0)
				for (;;)
					pause();
			_exit(0);
		}
		waitpid(a, NULL, 0);
	} else if (!strcmp(mode, "ghostbig")) {
		static char buf[2 << 20];
		memset(buf, 'g', sizeof(buf));
		int b = open("big.bin", O_RDWR | O_CREAT, 0600), m = open("gone.map", O_RDWR | O_CREAT, 0600);
		if (b < 0 || m < 0 || write(b, buf, 2 << 20) != 2 << 20 || write(m, buf, 3 << 19) != 3 << 19) {
			perror("ghostbig");
			return 1;
		}
		if (mmap(NULL, 3 << 19, PROT_READ, MAP_SHARED, m, 0) == MAP_FAILED || close(m) || unlink("big.bin") || unlink("gone.map")) {
			perror("ghostbig");
			return 1;
		}
	} else if (!strcmp(mode, "linkremap")) {
		if (open_file("a.txt") < 0 || link("a.txt", "b.txt") || unlink("a.txt")) {
			perror("linkremap");
			return 1;
		}
	} else if (!strcmp(mode, "inotifyq")) {
		int in = inotify_init1(0);
		if (in < 0 || inotify_add_watch(in, ".", IN_CREATE) != 1 || open_file("made") < 0) {
			perror("inotify");
			return 1;
		}
	} else if (!strcmp(mode, "procdir")) {
		char dir[64];
		pid_t child = fork();
		if (child == 0) {
			pause();
			_exit(0);
		}
		snprintf(dir, sizeof(dir), "/proc/%d", child);
		if (child < 0 || chdir(dir) || kill(child, SIGKILL) || waitpid(child, NULL, 0) != child) {
			perror("procdir");
			return 1;
		}
	} else if (!strcmp(mode, "inotifyghost")) {
		int in = inotify_init1(0);
		if (in < 0 || open_file("gone.txt") < 0 || inotify_add_watch(in, "gone.txt", IN_CLOSE_WRITE) != 1 || unlink("gone.txt")) {
			perror("inotifyghost");
			return 1;
		}
	} else {
		fprintf(stderr, "usage: refusals locks|fifo|files|procfile|rmdir|devnode|opath|leaderless|ghostbig|linkremap|inotifyq|inotifyghost|procdir\n");
		return 2;
	}
	printf("pid=%d\n", getpid());
	fflush(stdout);
	for (;;)
		pause();
}

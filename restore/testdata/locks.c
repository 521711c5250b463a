/* locks: a program holding file locks, for the file lock tests. argv[1] chooses:
 *
 *   mixed    in one process: POSIX locks on posix.db (READ 0-9, WRITE 20-29, WRITE
 *            100-EOF), an OFD write lock on ofd.db (5-14), an flock LOCK_EX on flock.db
 *            and LOCK_SH on flocksh.db
 *   tree     a parent and a child: an flock LOCK_EX on shared.db taken by the parent,
 *            which then closes it (only the child's inherited fd holds it: zdtm
 *            file_locks03); an OFD write lock on ofdshared.db that both hold (file_locks08);
 *            the child's own POSIX write lock on child.db
 *   pending  a POSIX write lock on pending.db, asked for with F_SETLKW while another
 *            process holds it: prints "got" once granted
 *   flockwait  the same with flock(LOCK_EX)
 *   lease    a read lease on lease.rd (opened O_RDONLY) and a write lease on lease.wr
 *            (O_WRONLY), as zdtm's file_lease00; the check also asks F_GETLEASE; with
 *            argv[2] "read-only", the read lease alone
 *
 * It prints "ready pid=N" (pending: "waiting pid=N" before it asks), ticks, and on SIGUSR1
 * checks the locks it holds in its own fdinfo and prints "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int sig) { go = 1; }

/* say prints a line with one write: a parent and its child share the log. */
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	if (write(1, buf, n) != n)
		exit(3);
}

static int open_file(const char *name)
{
	int fd = open(name, O_RDWR | O_CREAT, 0600);
	if (fd < 0 || ftruncate(fd, 200)) {
		perror(name);
		exit(1);
	}
	return fd;
}

static void setlk(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock l = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };
	if (fcntl(fd, cmd, &l)) {
		perror("fcntl lock");
		exit(1);
	}
}

/* want is one expected "lock:" line of an fd: class, type, start and end ("EOF"). */
struct want {
	int fd;
	const char *class, *type;
	long long start;
	const char *end;
	int mine; /* the pid column must be ours */
};

static char why[256];
static int lease_rd = -1, lease_wr = -1;

/* check finds each wanted lock in the fd's fdinfo, and no other. */
static int check(const struct want *w, int n)
{
	for (int i = 0; i < n; i++) {
		char path[64], line[256];
		int found = 0, lines = 0;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", w[i].fd);
		FILE *f = fopen(path, "r");
		if (!f) {
			snprintf(why, sizeof(why), "no %s", path);
			return 0;
		}
		while (fgets(line, sizeof(line), f)) {
			char class[16], type[16], mode[16], end[32];
			long long start;
			int pid;
			if (strncmp(line, "lock:", 5))
				continue;
			lines++;
			if (sscanf(line + 5, "%*d: %15s %15s %15s %d %*s %lld %31s", class, mode, type, &pid, &start, end) != 6)
				continue;
			for (int j = 0; j < n; j++)
				if (w[j].fd == w[i].fd && !strcmp(class, w[j].class) && !strcmp(type, w[j].type) &&
				    start == w[j].start && !strcmp(end, w[j].end) && (!w[j].mine || pid == getpid()))
					found += (j == i);
		}
		fclose(f);
		int same = 0;
		for (int j = 0; j < n; j++)
			same += w[j].fd == w[i].fd;
		if (found != 1 || lines != same) {
			snprintf(why, sizeof(why), "fd %d: %d lock lines, want %d with %s %s %lld-%s", w[i].fd, lines, same,
				 w[i].class, w[i].type, w[i].start, w[i].end);
			return 0;
		}
	}
	if (lease_rd >= 0 && (fcntl(lease_rd, F_GETLEASE) != F_RDLCK || (lease_wr >= 0 && fcntl(lease_wr, F_GETLEASE) != F_WRLCK))) {
		snprintf(why, sizeof(why), "F_GETLEASE: %d and %d", fcntl(lease_rd, F_GETLEASE), fcntl(lease_wr, F_GETLEASE));
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "mixed";
	struct want w[8];
	int n = 0;
	signal(SIGUSR1, on_usr1);
	if (!strcmp(mode, "mixed")) {
		int p = open_file("posix.db"), o = open_file("ofd.db"), fx = open_file("flock.db"), fs = open_file("flocksh.db");
		setlk(p, F_SETLK, F_RDLCK, 0, 10);
		setlk(p, F_SETLK, F_WRLCK, 20, 10);
		setlk(p, F_SETLK, F_WRLCK, 100, 0);
		setlk(o, F_OFD_SETLK, F_WRLCK, 5, 10);
		if (flock(fx, LOCK_EX) || flock(fs, LOCK_SH)) {
			perror("flock");
			return 1;
		}
		w[n++] = (struct want){ p, "POSIX", "READ", 0, "9", 1 };
		w[n++] = (struct want){ p, "POSIX", "WRITE", 20, "29", 1 };
		w[n++] = (struct want){ p, "POSIX", "WRITE", 100, "EOF", 1 };
		w[n++] = (struct want){ o, "OFDLCK", "WRITE", 5, "14", 0 };
		w[n++] = (struct want){ fx, "FLOCK", "WRITE", 0, "EOF", 1 };
		w[n++] = (struct want){ fs, "FLOCK", "READ", 0, "EOF", 1 };
	} else if (!strcmp(mode, "tree")) {
		int s = open_file("shared.db"), o = open_file("ofdshared.db");
		if (flock(s, LOCK_EX)) {
			perror("flock");
			return 1;
		}
		setlk(o, F_OFD_SETLK, F_WRLCK, 0, 0);
		pid_t child = fork();
		if (child == 0) {
			int c = open_file("child.db");
			setlk(c, F_SETLK, F_WRLCK, 0, 0);
			w[n++] = (struct want){ s, "FLOCK", "WRITE", 0, "EOF", 0 };
			w[n++] = (struct want){ o, "OFDLCK", "WRITE", 0, "EOF", 0 };
			w[n++] = (struct want){ c, "POSIX", "WRITE", 0, "EOF", 1 };
			say("child pid=%d\n", getpid());
		} else {
			close(s);
			w[n++] = (struct want){ o, "OFDLCK", "WRITE", 0, "EOF", 0 };
		}
	} else if (!strcmp(mode, "pending") || !strcmp(mode, "flockwait")) {
		int p = open_file("pending.db");
		say("waiting pid=%d\n", getpid());
		if (!strcmp(mode, "pending")) {
			struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
			if (fcntl(p, F_SETLKW, &l)) {
				perror("F_SETLKW");
				return 1;
			}
			w[n++] = (struct want){ p, "POSIX", "WRITE", 0, "EOF", 1 };
		} else {
			if (flock(p, LOCK_EX)) {
				perror("flock");
				return 1;
			}
			w[n++] = (struct want){ p, "FLOCK", "WRITE", 0, "EOF", 1 };
		}
		say("got\n");
	} else if (!strcmp(mode, "lease")) {
		close(open_file("lease.rd"));
		close(open_file("lease.wr"));
		int both = argc < 3 || strcmp(argv[2], "read-only");
		lease_rd = open("lease.rd", O_RDONLY);
		lease_wr = open("lease.wr", O_WRONLY);
		if (lease_rd < 0 || lease_wr < 0 || fcntl(lease_rd, F_SETLEASE, F_RDLCK) ||
		    (both && fcntl(lease_wr, F_SETLEASE, F_WRLCK))) {
			perror("lease");
			return 1;
		}
		w[n++] = (struct want){ lease_rd, "LEASE", "READ", 0, "EOF", 1 };
		if (both)
			w[n++] = (struct want){ lease_wr, "LEASE", "WRITE", 0, "EOF", 1 };
		else
			lease_wr = -1;
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	if (!check(w, n)) {
		say("FAIL before the dump: %s\n", why);
		return 1;
	}
	say("ready pid=%d\n", getpid());
	for (int i = 0;; i++) {
		if (go) {
			go = 0;
			if (check(w, n))
				say("ok\n");
			else
				say("FAIL: %s\n", why);
		}
		usleep(10000);
	}
}

/*
 * pty: a pseudo-terminal pair whose both ends are in the tree, carrying a counter both
 * ways. The parent holds the master; its child opens a new session whose controlling
 * terminal is the slave, with termios changed from the default (no echo, no output
 * post-processing, ^X as the interrupt character, 9600 baud) and a window size set; the
 * child's own child is made the terminal's foreground process group and answers each
 * number the parent writes with its double. The parent logs "n=N" per exchange; on
 * SIGUSR1 it checks, through the master, the terminal's termios, window size, session,
 * foreground group, packet mode, lock state and exclusive mode, and the answerer checks
 * its side at each exchange (its controlling terminal in /proc/self/stat, the foreground
 * group, termios, the slave's exclusive mode), then logs "ok" or "FAIL ...". Once the
 * answerer runs, the master is put in packet mode, locked (no new slave can be opened)
 * and made exclusive, and the answerer makes the slave exclusive; not in "leader" mode
 * (CRIU's restore, which it is for, does not restore exclusive modes).
 *
 * Modes: "ctty" (above), "devtty": the same, the answerer reading and writing through
 * /dev/tty; "leader": the session leader answers itself, its own group in the foreground; "shell": no pty of its own, a counter on stdout and a check of
 * its controlling terminal (stdin must be one, in a session led outside the tree: a shell
 * job; it leads a process group of its own, made the terminal's foreground group).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t check;

static void on_usr1(int sig) { (void)sig; check = 1; }

static struct termios want;
static const struct winsize wantWin = {.ws_row = 37, .ws_col = 101, .ws_xpixel = 5, .ws_ypixel = 7};

static void setWant(struct termios *t)
{
	t->c_lflag &= ~(ECHO | ECHOE | ECHOK | ECHONL);
	t->c_lflag |= ICANON;
	t->c_oflag &= ~ONLCR;
	t->c_iflag |= IUTF8;
	t->c_cc[VINTR] = 0x18;
	cfsetispeed(t, B9600);
	cfsetospeed(t, B9600);
}

/* sameTermios compares what a program can set. */
static int sameTermios(const struct termios *a, const struct termios *b)
{
	return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag && a->c_cflag == b->c_cflag &&
	       a->c_lflag == b->c_lflag && !memcmp(a->c_cc, b->c_cc, NCCS) &&
	       cfgetispeed(a) == cfgetispeed(b) && cfgetospeed(a) == cfgetospeed(b);
}

static int extras; /* packet mode, lock, exclusive modes: see above */

/* readMaster reads a line from the master, dropping the packet-mode header of each read. */
static int readMaster(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got + 1 < n) {
		char b[128];
		ssize_t r = read(fd, b, sizeof(b)); /* the answers come one at a time */
		if (r < 0 && errno == EINTR)
			continue;
		if (r < extras || got + r - extras + 1 > n)
			return -1;
		memcpy(buf + got, b + extras, r - extras);
		got += r - extras;
		if (got && buf[got - 1] == '\n')
			break;
	}
	buf[got] = 0;
	return got;
}

static int readLine(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got + 1 < n) {
		ssize_t r = read(fd, buf + got, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		if (buf[got++] == '\n')
			break;
	}
	buf[got] = 0;
	return got;
}

static int ttyNr(void)
{
	char b[1024];
	int fd = open("/proc/self/stat", O_RDONLY), n, tty = -1;
	if (fd < 0)
		return -1;
	n = read(fd, b, sizeof(b) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	b[n] = 0;
	char *p = strrchr(b, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %d", &tty) != 1)
		return -1;
	return tty;
}

/* answer runs in the foreground group: it doubles each number, or says what is wrong. */
static void answer(int fd, dev_t rdev)
{
	char buf[128];
	/* Reading before the session leader made this group the foreground one would stop it
	 * (SIGTTIN). */
	while (tcgetpgrp(fd) != getpgrp())
		usleep(1000);
	if (extras && ioctl(fd, TIOCEXCL))
		exit(1);
	for (;;) {
		if (readLine(fd, buf, sizeof(buf)) < 0)
			exit(1);
		struct termios t;
		const char *bad = NULL;
		if (tcgetattr(fd, &t) || !sameTermios(&t, &want))
			bad = "termios";
		else if (tcgetpgrp(fd) != getpgrp())
			bad = "not the foreground group";
		else if (ttyNr() != (int)rdev)
			bad = "controlling terminal";
		else {
			int excl = 0;
			if (extras && (ioctl(fd, TIOCGEXCL, &excl) || !excl))
				bad = "the slave is not exclusive";
		}
		if (bad)
			dprintf(fd, "FAIL %s\n", bad);
		else
			dprintf(fd, "%ld\n", 2 * atol(buf));
	}
}

static int shellMode(void)
{
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGTTOU, SIG_IGN);
	if (!isatty(0) || setpgid(0, 0) || tcsetpgrp(0, getpgrp())) {
		printf("FAIL setup: %s\n", strerror(errno));
		return 1;
	}
	struct stat st;
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	for (long n = 1;; n++) {
		printf("n=%ld\n", n);
		fflush(stdout);
		if (check) {
			check = 0;
			fstat(0, &st); /* the terminal it has now */
			if (ttyNr() != (int)st.st_rdev)
				printf("FAIL controlling terminal %d, stdin %d\n", ttyNr(), (int)st.st_rdev);
			else if (tcgetpgrp(0) != getpgrp())
				printf("FAIL foreground group %d, mine %d\n", tcgetpgrp(0), getpgrp());
			else
				printf("ok\n");
			fflush(stdout);
		}
		usleep(20000);
	}
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "shell"))
		return shellMode();
	extras = !(argc > 1 && !strcmp(argv[1], "leader"));
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		return 1;
	char slave[64];
	if (ptsname_r(m, slave, sizeof(slave)))
		return 1;
	if (tcgetattr(m, &want))
		return 1;
	setWant(&want);
	if (tcsetattr(m, TCSANOW, &want) || ioctl(m, TIOCSWINSZ, &wantWin))
		return 1;
	struct stat st;
	if (stat(slave, &st))
		return 1;
	int sync[2];
	if (pipe(sync))
		return 1;
	pid_t leader = fork();
	if (leader == 0) {
		close(m);
		close(sync[0]);
		setsid();
		int s = open(slave, O_RDWR); /* a session leader without a terminal: it becomes its ctty */
		if (s < 0)
			exit(1);
		signal(SIGTTOU, SIG_IGN);
		if (argc > 1 && !strcmp(argv[1], "leader")) {
			dup2(s, 0);
			dup2(s, 1);
			close(s);
			close(sync[1]);
			answer(1, st.st_rdev);
		}
		pid_t fg = fork();
		if (fg == 0) {
			setpgid(0, 0);
			dup2(s, 0);
			dup2(s, 1);
			close(s);
			if (argc > 1 && !strcmp(argv[1], "devtty")) {
				int tty = open("/dev/tty", O_RDWR); /* before the parent locks the pty */
				if (tty < 0)
					exit(1);
				close(sync[1]);
				answer(tty, st.st_rdev);
			}
			close(sync[1]);
			answer(1, st.st_rdev);
		}
		setpgid(fg, fg);
		if (tcsetpgrp(s, fg))
			exit(1);
		close(sync[1]); /* the foreground group is set */
		close(s);
		for (;;)
			pause();
	}
	close(sync[1]);
	char c;
	read(sync[0], &c, 1);
	close(sync[0]);
	struct sigaction sa = {.sa_handler = on_usr1};
	sigaction(SIGUSR1, &sa, NULL);
	int fgpgrp = 0;
	if (ioctl(m, TIOCGPGRP, &fgpgrp) || (fgpgrp == leader) != (argc > 1 && !strcmp(argv[1], "leader")))
		return 1;
	if (extras) {
		int one = 1;
		/* the answerer has its slave open: the pty can be locked now */
		if (ioctl(m, TIOCPKT, &one) || ioctl(m, TIOCSPTLCK, &one) || ioctl(m, TIOCEXCL))
			return 1;
	}
	printf("ready pid=%d leader=%d fg=%d slave=%s\n", getpid(), leader, fgpgrp, slave);
	fflush(stdout);
	char buf[128];
	for (long n = 1;; n++) {
		dprintf(m, "%ld\n", n);
		if (readMaster(m, buf, sizeof(buf)) < 0) {
			printf("FAIL reading the master: %s\n", strerror(errno));
			return 1;
		}
		if (atol(buf) != 2 * n) {
			printf("FAIL sent %ld, got %s", n, buf);
			fflush(stdout);
			return 1;
		}
		printf("n=%ld\n", n);
		fflush(stdout);
		if (check) {
			check = 0;
			struct termios t;
			struct winsize w;
			int sid = 0, pgrp = 0, pkt = -1, lck = -1, excl = -1;
			if (tcgetattr(m, &t) || !sameTermios(&t, &want))
				printf("FAIL termios\n");
			else if (ioctl(m, TIOCGWINSZ, &w) || memcmp(&w, &wantWin, sizeof(w)))
				printf("FAIL window size %dx%d\n", w.ws_row, w.ws_col);
			else if (ioctl(m, TIOCGSID, &sid) || sid != leader)
				printf("FAIL session %d, want %d\n", sid, leader);
			else if (ioctl(m, TIOCGPGRP, &pgrp) || pgrp != fgpgrp)
				printf("FAIL foreground group %d, want %d\n", pgrp, fgpgrp);
			else if (ioctl(m, TIOCGPKT, &pkt) || pkt != extras || ioctl(m, TIOCGPTLCK, &lck) || lck != extras)
				printf("FAIL packet mode %d, locked %d\n", pkt, lck);
			else if (ioctl(m, TIOCGEXCL, &excl) || excl != extras)
				printf("FAIL master exclusive %d\n", excl);
			else
				printf("ok\n");
			fflush(stdout);
		}
		usleep(20000);
	}
}

/* kitchen DIR: a process tree holding every kind of state imgtool dumps and restores, each
 * process printing a self-report line every 100 ms, for round trips.
 *
 * The tree: root (session and group leader: the launcher calls setsid) with two more
 * threads; child1 in a process group of its own; child3 in child1's group; child2 in a
 * session of its own with a child, grandchild, in its group and session.
 *
 * root holds: data.txt O_RDONLY from offset 1234 (fd "data", read 4 bytes a tick,
 * alternately through a dup of it), append.log O_WRONLY|O_APPEND, rw.dat O_RDWR (8 bytes
 * written a tick), /dev/null O_RDWR and /dev/zero O_RDONLY (used every tick), a pipe with
 * "ROOT-PIPE-QUEUED" queued (O_NONBLOCK), the FIFO ks.fifo with "ROOT-FIFO-QUEUED", and the
 * read end of a pipe child1 queued "CHILD1-QUEUED" in. Every process writes a 16-byte
 * record a tick to shared.dat through one description opened before the forks.
 *
 * State: umask 027, cwd DIR/work.dir, resource limits lowered, personality
 * ADDR_NO_RANDOMIZE, thread and process names, a SIGUSR1 handler run on each thread's own
 * alternate stack, a SA_SIGINFO SIGHUP handler, SIGPIPE and SIGTRAP ignored (the trap
 * that ends a batch of injected calls resets an ignored SIGTRAP), SIGUSR2 blocked in every
 * thread, signal 39 also blocked in root's main thread and 40 in its thread 2, child1's
 * parent death signal, child2's nice 5, the heap grown by one page a tick.
 *
 * On SIGHUP root reads everything queued in its pipes and FIFO and prints it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/rseq.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define NT 3
#define ALT_SIZE 65536

static volatile uint64_t cnt[NT];
static volatile int tids[NT];
static volatile int usr1[NT], onalt[NT];
static volatile int hups;
static char *altbase[NT];
static void *volatile altnow[NT];
static const char *volatile rseqst[NT];
static __thread int self;
static int shared_fd;

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void on_usr1(int sig)
{
	char here;
	(void)sig;
	usr1[self]++;
	if (&here >= altbase[self] && &here < altbase[self] + ALT_SIZE)
		onalt[self]++;
}

static void on_hup(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
	hups++;
}

/* rseq_probe tells whether the calling thread has its glibc rseq area registered: asking
 * the kernel to register it again fails with EBUSY then. */
static const char reg[] = "reg";

static const char *rseq_probe(void)
{
	char *tp;
	unsigned lens[] = { 32, __rseq_size };
	if (__rseq_size == 0)
		return "off";
	__asm__("mov %%fs:0, %0" : "=r"(tp));
	for (int i = 0; i < 2; i++) {
		if (syscall(SYS_rseq, tp + __rseq_offset, lens[i], 0, RSEQ_SIG) == 0)
			return "NEW";
		if (errno == EBUSY)
			return reg;
	}
	return "ERR";
}

static void altstack(int i)
{
	stack_t ss = { .ss_size = ALT_SIZE };
	altbase[i] = ss.ss_sp = malloc(ALT_SIZE);
	if (!ss.ss_sp || sigaltstack(&ss, NULL))
		die("sigaltstack");
}

static void block(int sig)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, sig);
	if (pthread_sigmask(SIG_BLOCK, &s, NULL))
		die("sigmask");
}

static void tick_state(int i)
{
	stack_t ss;
	sigaltstack(NULL, &ss);
	altnow[i] = ss.ss_sp;
	if (!rseqst[i] || rseqst[i] == reg)
		rseqst[i] = rseq_probe(); /* anything but "reg" sticks: it must show */
}

static void *worker(void *arg)
{
	long i = (long)arg;
	char name[16];
	self = i;
	tids[i] = gettid();
	snprintf(name, sizeof(name), "ks-t%ld", i);
	prctl(PR_SET_NAME, name);
	altstack(i);
	if (i == 2)
		block(40);
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	for (;;) {
		cnt[i]++;
		tick_state(i);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* report appends the fields every process reports to b. */
static int report(char *b, size_t n, const char *who, unsigned long tick)
{
	uid_t r, e, s;
	gid_t gr, ge, gs, groups[16];
	struct rlimit nofile;
	char cwd[512], comm[17] = "";
	mode_t um = umask(0);
	umask(um);
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	int ng = getgroups(16, groups);
	getrlimit(RLIMIT_NOFILE, &nofile);
	if (!getcwd(cwd, sizeof(cwd)))
		strcpy(cwd, "?");
	prctl(PR_GET_NAME, comm);
	int pdeath = 0;
	prctl(PR_GET_PDEATHSIG, &pdeath);
	errno = 0;
	int nice = getpriority(PRIO_PROCESS, 0);
	int l = snprintf(b, n, "ks who=%s n=%lu pid=%d ppid=%d pgid=%d sid=%d uid=%u,%u,%u gid=%u,%u,%u groups=",
			 who, tick, getpid(), getppid(), getpgid(0), getsid(0), r, e, s, gr, ge, gs);
	for (int i = 0; i < ng; i++)
		l += snprintf(b + l, n - l, "%s%u", i ? "," : "", groups[i]);
	l += snprintf(b + l, n - l, " umask=%03o cwd=%s nofile=%llu/%llu pers=%#x comm=%s nice=%d pdeath=%d spos=%ld",
		      um, cwd, (unsigned long long)nofile.rlim_cur, (unsigned long long)nofile.rlim_max,
		      personality(0xffffffff), comm, nice, pdeath, (long)lseek(shared_fd, 0, SEEK_CUR));
	return l;
}

/* shared_record writes one 16-byte record to shared.dat through the shared description. */
static void shared_record(const char *who, unsigned long tick)
{
	char rec[17];
	snprintf(rec, sizeof(rec), "%-8s%07lu\n", who, tick % 10000000);
	if (write(shared_fd, rec, 16) != 16)
		die("write shared.dat");
}

static void child_loop(const char *who)
{
	char line[1024];
	prctl(PR_SET_NAME, who);
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	for (unsigned long tick = 1;; tick++) {
		shared_record(who, tick);
		int l = report(line, sizeof(line) - 1, who, tick);
		line[l++] = '\n';
		if (write(1, line, l) != l)
			exit(3);
		nanosleep(&ts, NULL);
	}
}

static int xopen(const char *path, int flags)
{
	int fd = open(path, flags, 0644);
	if (fd < 0)
		die(path);
	return fd;
}

static void drain(int fd, char *out, size_t n)
{
	ssize_t got = read(fd, out, n - 1);
	out[got > 0 ? got : 0] = 0;
	if (got <= 0)
		strcpy(out, "-");
}

static int queued(int fd)
{
	int n = -1;
	ioctl(fd, FIONREAD, &n);
	return n;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: kitchen DIR\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IONBF, 0);
	if (chdir(argv[1]) || (mkdir("work.dir", 0755) && errno != EEXIST) || chdir("work.dir"))
		die("work.dir");
	umask(027);
	personality(PER_LINUX | ADDR_NO_RANDOMIZE);
	prctl(PR_SET_NAME, "ks-root");
	struct rlimit nofile = { 200, 400 }, core = { 0, 1 << 20 }, msgq = { 4096, 8192 };
	if (setrlimit(RLIMIT_NOFILE, &nofile) || setrlimit(RLIMIT_CORE, &core) || setrlimit(RLIMIT_MSGQUEUE, &msgq))
		die("setrlimit");

	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_ONSTACK | SA_RESTART };
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGCHLD);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction");
	struct sigaction hup = { .sa_sigaction = on_hup, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigemptyset(&hup.sa_mask);
	if (sigaction(SIGHUP, &hup, NULL))
		die("sigaction");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTRAP, SIG_IGN);
	block(SIGUSR2);
	altstack(0);

	int data = xopen("../data.txt", O_RDONLY);
	if (lseek(data, 1234, SEEK_SET) != 1234)
		die("lseek");
	int data_dup = dup(data);
	int app = xopen("append.log", O_WRONLY | O_APPEND | O_CREAT);
	int rw = xopen("rw.dat", O_RDWR | O_CREAT | O_TRUNC);
	shared_fd = xopen("shared.dat", O_RDWR | O_CREAT | O_TRUNC);
	int null = xopen("/dev/null", O_RDWR), zero = xopen("/dev/zero", O_RDONLY);
	int p[2], c2p[2];
	if (pipe2(p, O_NONBLOCK) || write(p[1], "ROOT-PIPE-QUEUED", 16) != 16)
		die("pipe");
	unlink("ks.fifo");
	if (mkfifo("ks.fifo", 0600))
		die("mkfifo");
	int fifo = xopen("ks.fifo", O_RDWR | O_NONBLOCK);
	if (write(fifo, "ROOT-FIFO-QUEUED", 16) != 16)
		die("fifo");
	if (pipe(c2p))
		die("pipe");
	printf("pid=%d\n", getpid());

	tids[0] = gettid();
	pthread_t th;
	for (long i = 1; i < NT; i++)
		if (pthread_create(&th, NULL, worker, (void *)i))
			die("pthread_create");
	block(39);

	pid_t c1 = fork();
	if (c1 == 0) {
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		close(c2p[0]);
		if (write(c2p[1], "CHILD1-QUEUED", 13) != 13)
			die("c2p");
		child_loop("child1");
	}
	setpgid(c1, c1);
	close(c2p[1]);
	fcntl(c2p[0], F_SETFL, O_NONBLOCK);
	pid_t c3 = fork();
	if (c3 == 0) {
		setpgid(0, c1);
		child_loop("child3");
	}
	setpgid(c3, c1);
	if (fork() == 0) {
		setsid();
		if (nice(5) < 0)
			die("nice");
		if (fork() == 0)
			child_loop("grandch");
		child_loop("child2");
	}

	char line[2048], buf[64];
	int seen_hups = 0;
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	for (unsigned long tick = 1;; tick++) {
		int fd = tick % 2 ? data : data_dup;
		char rdata[5] = "";
		if (read(fd, rdata, 4) != 4)
			die("read data");
		if (write(app, "root tick\n", 10) != 10)
			die("append");
		snprintf(buf, sizeof(buf), "%07lu\n", tick % 10000000);
		if (write(rw, buf, 8) != 8)
			die("rw");
		shared_record("root", tick);
		const char *dev = read(zero, buf, 8) == 8 && !memcmp(buf, "\0\0\0\0\0\0\0\0", 8) && write(null, buf, 8) == 8 ? "ok" : "BAD";
		char *heap = sbrk(4096);
		if (heap == (void *)-1)
			die("sbrk");
		memset(heap, 0x5a, 4096);
		tick_state(0);
		if (seen_hups != hups) {
			char a[64], b[64], c[64];
			seen_hups = hups;
			drain(p[0], a, sizeof(a));
			drain(fifo, b, sizeof(b));
			drain(c2p[0], c, sizeof(c));
			printf("drained pipe=%s fifo=%s c2p=%s\n", a, b, c);
		}
		int l = report(line, sizeof(line) - 1, "root", tick);
		void *head;
		size_t hlen;
		sigset_t blk;
		pthread_sigmask(SIG_BLOCK, NULL, &blk);
		uint64_t mask = 0;
		for (int s = 1; s <= 64; s++)
			if (sigismember(&blk, s) == 1)
				mask |= 1ull << (s - 1);
		l += snprintf(line + l, sizeof(line) - l, " blk=%#llx rpos=%ld rdata=%s rwpos=%ld dev=%s brk=%#lx q=%d,%d,%d hup=%d",
			      (unsigned long long)mask, (long)lseek(data, 0, SEEK_CUR), rdata, (long)lseek(rw, 0, SEEK_CUR), dev,
			      syscall(SYS_brk, 0), queued(p[0]), queued(fifo), queued(c2p[0]), hups);
		const char *names[] = { "tids", "cnt", "usr1", "onalt", "alt", "robust", "rseq" };
		for (int k = 0; k < 7; k++) {
			l += snprintf(line + l, sizeof(line) - l, " %s=", names[k]);
			for (int i = 0; i < NT; i++) {
				const char *sep = i ? "," : "";
				switch (k) {
				case 0: l += snprintf(line + l, sizeof(line) - l, "%s%d", sep, tids[i]); break;
				case 1: l += snprintf(line + l, sizeof(line) - l, "%s%llu", sep, (unsigned long long)cnt[i]); break;
				case 2: l += snprintf(line + l, sizeof(line) - l, "%s%d", sep, usr1[i]); break;
				case 3: l += snprintf(line + l, sizeof(line) - l, "%s%d", sep, onalt[i]); break;
				case 4: l += snprintf(line + l, sizeof(line) - l, "%s%p", sep, altnow[i]); break;
				case 5:
					head = NULL;
					syscall(SYS_get_robust_list, tids[i], &head, &hlen);
					l += snprintf(line + l, sizeof(line) - l, "%s%p", sep, head);
					break;
				case 6: l += snprintf(line + l, sizeof(line) - l, "%s%s", sep, rseqst[i] ? rseqst[i] : "-"); break;
				}
			}
		}
		line[l++] = '\n';
		if (write(1, line, l) != l)
			return 3;
		cnt[0]++;
		nanosleep(&ts, NULL);
	}
}

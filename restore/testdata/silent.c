/* silent: states CRIU's test suite (zdtm) found restored wrong without a word. One state per
 * run, chosen by argv[1]:
 *
 *   mlock         mlock() on part of an area, a MAP_LOCKED area (maps02)
 *   mlock-setuid  the same, locked as root, then RLIMIT_MEMLOCK 0 and uid 65534 (mlock_setuid)
 *   subreaper     PR_SET_CHILD_SUBREAPER (child_subreaper)
 *   sched         SCHED_BATCH|SCHED_RESET_ON_FORK (sched_policy00)
 *   fown          F_SETOWN(_EX), F_SETSIG and O_ASYNC on pipes, one owned by a child (file_fown)
 *   mapprot       a MAP_SHARED mapping of a file opened O_RDWR, mapped read-only, argv[2] (maps_file_prot)
 *   memfd         a 5-byte memfd, O_APPEND, mode 0642, offset 3, bytes past EOF in its page (memfd00)
 *   pipesize      an empty pipe grown to 1 MiB with F_SETPIPE_SZ (pipe03)
 *   oom           oom_score_adj 400 (oom_score_adj)
 *   droppable     a MAP_DROPPABLE area (maps02)
 *   loginuid      the audit login uid set to 4242 (/proc/self/loginuid, as root)
 *   protruns      48 one-page private mappings side by side, read-write, read-only and
 *                 PROT_NONE in turn, each page's bytes its own: their pages are one run of
 *                 the pages file that a restore writes across all three protections
 *   bigruns       the same with 20 pages a mapping (80 KiB: large enough for a restore to
 *                 place them through a userfaultfd), with one hole of two missing pages in
 *                 each mapping, advised MADV_NOHUGEPAGE
 *
 * The program sets the state, checks it once (so a test knows the check holds before the
 * dump), prints "ready", waits for SIGUSR1 (sent after the restore), checks again and prints
 * "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define PAGE 4096
#ifndef F_GETOWNER_UIDS
#define F_GETOWNER_UIDS 17
#endif

#include "check.h"

static volatile sig_atomic_t rtsig_fd = -1;

static void on_rt(int sig, siginfo_t *si, void *uc) { rtsig_fd = si->si_fd; }
static void on_io(int sig) {}

/* locked says whether the VMA holding addr has VM_LOCKED ("lo" in VmFlags). */
static int locked(void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0, lo = -1;
	unsigned long a = (unsigned long)addr, s, e;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = a >= s && a < e;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			lo = strstr(line, " lo") != NULL;
			break;
		}
	}
	fclose(f);
	return lo;
}

/* --- mlock, mlock-setuid --- */
static char *area, *mlocked;

static void set_mlock(int setuid_after)
{
	area = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mlocked = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	if (area == MAP_FAILED || mlocked == MAP_FAILED || mlock(area + 4 * PAGE, 4 * PAGE)) {
		perror("mmap/mlock");
		exit(1);
	}
	memset(area, 'a', 16 * PAGE);
	memset(mlocked, 'm', 4 * PAGE);
	if (setuid_after) {
		struct rlimit zero = { 0, 0 };
		if (setrlimit(RLIMIT_MEMLOCK, &zero) || setresuid(65534, 65534, 65534)) {
			perror("setrlimit/setresuid");
			exit(1);
		}
	}
}

static int check_mlock(void)
{
	CHECK(locked(area) == 0, "area+0 locked=%d, want 0", locked(area));
	CHECK(locked(area + 4 * PAGE) == 1, "area+4 pages locked=%d, want 1", locked(area + 4 * PAGE));
	CHECK(locked(area + 7 * PAGE) == 1, "area+7 pages locked=%d, want 1", locked(area + 7 * PAGE));
	CHECK(locked(area + 8 * PAGE) == 0, "area+8 pages locked=%d, want 0", locked(area + 8 * PAGE));
	CHECK(locked(mlocked) == 1, "MAP_LOCKED area locked=%d, want 1", locked(mlocked));
	CHECK(area[5 * PAGE] == 'a' && mlocked[3 * PAGE] == 'm', "locked content lost");
	return 1;
}

/* --- subreaper --- */
static void set_subreaper(void)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) {
		perror("PR_SET_CHILD_SUBREAPER");
		exit(1);
	}
}

static int check_subreaper(void)
{
	int v = -1;
	CHECK(prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) == 0 && v == 1, "child subreaper %d, want 1", v);
	return 1;
}

/* --- sched --- */
static void set_sched(void)
{
	struct sched_param sp = { 0 };
	if (sched_setscheduler(0, SCHED_BATCH | SCHED_RESET_ON_FORK, &sp)) {
		perror("sched_setscheduler");
		exit(1);
	}
}

static int check_sched(void)
{
	int pol = sched_getscheduler(0);
	CHECK(pol == (SCHED_BATCH | SCHED_RESET_ON_FORK), "policy %#x, want %#x", pol, SCHED_BATCH | SCHED_RESET_ON_FORK);
	return 1;
}

/* --- fown --- */
static int p1[2], p2[2];
static pid_t child;

static void set_fown(void)
{
	struct sigaction sa = { .sa_sigaction = on_rt, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct f_owner_ex ex;
	/* The write end's owner gets SIGIO (no F_SETSIG) when room frees up. */
	if (pipe(p1) || pipe(p2) || sigaction(SIGRTMIN + 1, &sa, NULL) || signal(SIGIO, on_io) == SIG_ERR) {
		perror("pipe/sigaction");
		exit(1);
	}
	child = fork();
	if (child == 0) {
		for (;;)
			pause();
	}
	/* The owner is set with euid 1: the file remembers who set it. */
	if (setresuid(-1, 1, -1) || fcntl(p1[0], F_SETOWN, getpid()) || fcntl(p1[1], F_SETOWN, getpid()) ||
	    fcntl(p1[0], F_SETSIG, SIGRTMIN + 1) || fcntl(p1[0], F_SETFL, fcntl(p1[0], F_GETFL) | O_ASYNC) ||
	    fcntl(p1[1], F_SETFL, fcntl(p1[1], F_GETFL) | O_ASYNC | O_NONBLOCK) || setresuid(-1, 0, -1)) {
		perror("fcntl as euid 1");
		exit(1);
	}
	ex.type = F_OWNER_PID;
	ex.pid = child;
	if (fcntl(p2[0], F_SETOWN_EX, &ex) || fcntl(p2[0], F_SETSIG, SIGUSR2)) {
		perror("F_SETOWN_EX");
		exit(1);
	}
}

static int check_fown(void)
{
	struct f_owner_ex ex;
	unsigned int uids[2] = { 99, 99 };
	char c = 'x';
	CHECK(fcntl(p1[0], F_GETOWN) == getpid() && fcntl(p1[1], F_GETOWN) == getpid(), "pipe 1 owners %d %d, want %d",
	      fcntl(p1[0], F_GETOWN), fcntl(p1[1], F_GETOWN), getpid());
	CHECK(fcntl(p1[0], F_GETSIG) == SIGRTMIN + 1 && fcntl(p1[1], F_GETSIG) == 0, "pipe 1 signals %d %d",
	      fcntl(p1[0], F_GETSIG), fcntl(p1[1], F_GETSIG));
	CHECK(fcntl(p1[0], F_GETFL) == (O_RDONLY | O_ASYNC), "pipe 1 read end flags %#o", fcntl(p1[0], F_GETFL));
	CHECK(fcntl(p1[1], F_GETFL) == (O_WRONLY | O_ASYNC | O_NONBLOCK), "pipe 1 write end flags %#o", fcntl(p1[1], F_GETFL));
	CHECK(fcntl(p1[0], F_GETOWNER_UIDS, uids) == 0 && uids[0] == 0 && uids[1] == 1, "pipe 1 owner uids %u %u, want 0 1",
	      uids[0], uids[1]);
	CHECK(fcntl(p2[0], F_GETOWN_EX, &ex) == 0 && ex.type == F_OWNER_PID && ex.pid == child, "pipe 2 owner %d:%d, want %d:%d",
	      ex.type, ex.pid, F_OWNER_PID, child);
	CHECK(fcntl(p2[0], F_GETSIG) == SIGUSR2 && fcntl(p2[0], F_GETFL) == O_RDONLY, "pipe 2 signal %d flags %#o",
	      fcntl(p2[0], F_GETSIG), fcntl(p2[0], F_GETFL));
	/* Data in pipe 1 signals us, naming the read end's fd. */
	rtsig_fd = -1;
	CHECK(write(p1[1], &c, 1) == 1 && read(p1[0], &c, 1) == 1, "pipe 1 i/o");
	for (int i = 0; i < 100 && rtsig_fd == -1; i++)
		usleep(10000);
	CHECK(rtsig_fd == p1[0], "SIGRTMIN+1 si_fd %d, want %d", rtsig_fd, p1[0]);
	return 1;
}

/* --- mapprot --- */
static char *ro_map;

static void set_mapprot(const char *name)
{
	int fd = open(name, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 2 * PAGE)) {
		perror(name);
		exit(1);
	}
	ro_map = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, 0);
	if (ro_map == MAP_FAILED || mprotect(ro_map + PAGE, PAGE, PROT_READ | PROT_WRITE)) {
		perror("mmap/mprotect");
		exit(1);
	}
	close(fd);
}

static int check_mapprot(void)
{
	ro_map[PAGE] = 1;
	CHECK(mprotect(ro_map, PAGE, PROT_READ | PROT_WRITE) == 0, "mprotect(PROT_WRITE) of the read-only page: %s", strerror(errno));
	ro_map[0] = 2;
	CHECK(mprotect(ro_map, PAGE, PROT_READ) == 0, "mprotect back");
	return 1;
}

/* --- protruns, bigruns --- */
#define NRUN 48
static unsigned char *runs;
static int run_pages = 1;
static const int run_prot[3] = {PROT_READ | PROT_WRITE, PROT_READ, PROT_NONE};

/* run_page fills want with what page k of the runs holds: its own bytes, or, for the
 * untouched pages of bigruns (the 5th and 6th of each mapping), zeros. */
static void run_page(unsigned char *want, int k)
{
	if (run_pages > 1 && (k % run_pages == 4 || k % run_pages == 5)) {
		memset(want, 0, PAGE);
		return;
	}
	memset(want, 0x40 + k % 64, PAGE);
	memcpy(want, &k, sizeof(k));
}

static void set_protruns(void)
{
	size_t size = (size_t)NRUN * run_pages * PAGE;
	runs = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (runs == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	for (int k = 0; k < NRUN * run_pages; k++) {
		unsigned char want[PAGE];
		run_page(want, k);
		if (want[PAGE - 1])
			memcpy(runs + (size_t)k * PAGE, want, PAGE);
	}
	/* Never huge pages: a restore places the pages of a mapping that would take them
	 * without a userfaultfd, and bigruns is the userfaultfd's test, whatever the
	 * machine's transparent huge page mode. */
	if (run_pages > 1 && madvise(runs, size, MADV_NOHUGEPAGE)) {
		perror("madvise");
		exit(1);
	}
	for (int i = 0; i < NRUN; i++)
		if (mprotect(runs + (size_t)i * run_pages * PAGE, (size_t)run_pages * PAGE, run_prot[i % 3])) {
			perror("mprotect");
			exit(1);
		}
}

/* run_perms returns the protection /proc/self/maps gives the page at addr, -1 if none. */
static int run_perms(unsigned long addr)
{
	char line[512], perm[8];
	unsigned long lo, hi;
	int prot = -1;
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perm) == 3 && addr >= lo && addr < hi) {
			prot = (perm[0] == 'r' ? PROT_READ : 0) | (perm[1] == 'w' ? PROT_WRITE : 0);
			break;
		}
	fclose(f);
	return prot;
}

static int check_protruns(void)
{
	unsigned char page[PAGE], want[PAGE];
	int mem = open("/proc/self/mem", O_RDONLY);
	CHECK(mem >= 0, "open /proc/self/mem: %s", strerror(errno));
	for (int k = 0; k < NRUN * run_pages; k++) {
		unsigned char *at = runs + (size_t)k * PAGE;
		int i = k / run_pages, prot = run_perms((unsigned long)at);
		run_page(want, k);
		/* /proc/self/mem reads a PROT_NONE page too */
		int ok = pread(mem, page, PAGE, (off_t)(unsigned long)at) == PAGE && !memcmp(page, want, PAGE);
		if (!ok || prot != run_prot[i % 3]) {
			close(mem);
			CHECK(0, "page %d: protection %d (want %d), bytes %s", k, prot, run_prot[i % 3], ok ? "right" : "wrong");
		}
	}
	close(mem);
	return 1;
}

/* --- memfd --- */
static int mfd, mfd_flags;

static void set_memfd(void)
{
	char *p;
	mfd = memfd_create("somename", MFD_CLOEXEC);
	if (mfd < 0 || fcntl(mfd, F_SETFL, O_APPEND) || write(mfd, "hello", 5) != 5 || lseek(mfd, 3, SEEK_SET) != 3 ||
	    fchmod(mfd, 0642)) {
		perror("memfd");
		exit(1);
	}
	mfd_flags = fcntl(mfd, F_GETFL);
	/* Bytes past the end of the file, in its last page, live as long as the page does. */
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED) {
		perror("mmap memfd");
		exit(1);
	}
	strcpy(p + 100, "PAST-EOF");
	munmap(p, PAGE);
}

static int check_memfd(void)
{
	struct stat st;
	char buf[8] = "";
	char *p;
	CHECK(fcntl(mfd, F_GETFL) == mfd_flags && fcntl(mfd, F_GETFD) == FD_CLOEXEC, "flags %#o fd flags %d", fcntl(mfd, F_GETFL),
	      fcntl(mfd, F_GETFD));
	CHECK(fstat(mfd, &st) == 0 && st.st_size == 5 && (st.st_mode & 07777) == 0642, "size %ld mode %#o", (long)st.st_size,
	      st.st_mode & 07777);
	CHECK(lseek(mfd, 0, SEEK_CUR) == 3, "offset %ld", (long)lseek(mfd, 0, SEEK_CUR));
	CHECK(pread(mfd, buf, sizeof(buf), 0) == 5 && !memcmp(buf, "hello", 5), "content %.8s", buf);
	p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, mfd, 0);
	CHECK(p != MAP_FAILED && !strcmp(p + 100, "PAST-EOF"), "bytes past EOF lost");
	munmap(p, PAGE);
	return 1;
}

static int pp[2];

static void set_pipesize(void)
{
	if (pipe(pp) || fcntl(pp[1], F_SETPIPE_SZ, 1 << 20) < 0)
		perror("pipe size");
}

static int check_pipesize(void)
{
	int n = fcntl(pp[0], F_GETPIPE_SZ);
	CHECK(n == 1 << 20, "pipe size %d, want %d", n, 1 << 20);
	return 1;
}

static void set_oom(void)
{
	FILE *f = fopen("/proc/self/oom_score_adj", "w");
	if (!f || fprintf(f, "400\n") < 0 || fclose(f))
		perror("oom_score_adj");
}

static int check_oom(void)
{
	int v = -1;
	FILE *f = fopen("/proc/self/oom_score_adj", "r");
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	CHECK(v == 400, "oom_score_adj %d, want 400", v);
	return 1;
}

static void set_loginuid(void)
{
	FILE *f = fopen("/proc/self/loginuid", "w");
	if (!f || fprintf(f, "4242") < 0 || fclose(f))
		perror("loginuid");
}

static int check_loginuid(void)
{
	unsigned v = 0;
	FILE *f = fopen("/proc/self/loginuid", "r");
	if (f) {
		if (fscanf(f, "%u", &v) != 1)
			v = 0;
		fclose(f);
	}
	CHECK(v == 4242, "loginuid %u, want 4242", v);
	return 1;
}

#ifndef MAP_DROPPABLE
#define MAP_DROPPABLE 0x08
#endif
static char *drop;

static void set_droppable(void)
{
	drop = mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0);
	if (drop == MAP_FAILED)
		perror("MAP_DROPPABLE");
	else
		memset(drop, 7, 16 * PAGE);
}

/* vmflag says whether the VMA holding addr has flag in its VmFlags. */
static int vmflag(void *addr, const char *flag)
{
	char line[512];
	unsigned long lo, hi, a = (unsigned long)addr;
	int in = 0, found = 0;
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = a >= lo && a < hi;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			char pat[8];
			snprintf(pat, sizeof(pat), " %s", flag);
			found = strstr(line, pat) != NULL;
			break;
		}
	}
	fclose(f);
	return found;
}

static int check_droppable(void)
{
	CHECK(drop != MAP_FAILED, "no MAP_DROPPABLE on this kernel");
	CHECK(vmflag(drop, "dp"), "the area is not droppable (no \"dp\" in VmFlags)");
	return 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	int (*check)(void);
	signal(SIGUSR1, on_usr1);
	if (!strcmp(mode, "mlock") || !strcmp(mode, "mlock-setuid")) {
		set_mlock(!strcmp(mode, "mlock-setuid"));
		check = check_mlock;
	} else if (!strcmp(mode, "subreaper")) {
		set_subreaper();
		check = check_subreaper;
	} else if (!strcmp(mode, "sched")) {
		set_sched();
		check = check_sched;
	} else if (!strcmp(mode, "fown")) {
		set_fown();
		check = check_fown;
	} else if (!strcmp(mode, "mapprot") && argc > 2) {
		set_mapprot(argv[2]);
		check = check_mapprot;
	} else if (!strcmp(mode, "memfd")) {
		set_memfd();
		check = check_memfd;
	} else if (!strcmp(mode, "pipesize")) {
		set_pipesize();
		check = check_pipesize;
	} else if (!strcmp(mode, "oom")) {
		set_oom();
		check = check_oom;
	} else if (!strcmp(mode, "loginuid")) {
		set_loginuid();
		check = check_loginuid;
	} else if (!strcmp(mode, "protruns") || !strcmp(mode, "bigruns")) {
		if (!strcmp(mode, "bigruns"))
			run_pages = 20;
		set_protruns();
		check = check_protruns;
	} else if (!strcmp(mode, "droppable")) {
		set_droppable();
		check = check_droppable;
	} else {
		fprintf(stderr, "usage: silent MODE [FILE]\n");
		return 2;
	}
	if (!check()) {
		printf("FAIL before the dump: %s\n", why);
		return 1;
	}
	printf("ready pid=%d\n", getpid());
	fflush(stdout);
	while (!go) /* polled: after a restore, a signal may arrive before pause() is re-entered */
		usleep(10000);
	if (check())
		printf("ok\n");
	else
		printf("FAIL: %s\n", why);
	fflush(stdout);
	for (;;)
		pause();
}

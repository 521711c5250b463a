/* ghosts: files a process still uses after their names were removed (CRIU's ghost files),
 * set up in the working directory before a dump and checked after the restore. One state
 * per run, chosen by argv[1]:
 *
 *   files  small.txt (3000 bytes, mode 0751, owner 1234:5678 when run as root, a set mtime)
 *          open O_RDWR at offset 100 and O_RDONLY|O_NOFOLLOW at 7 (two descriptions, one
 *          inode; O_NOFOLLOW as Python's tempfile.mkstemp opens a multiprocessing.Value's file);
 *          sparse.bin (64 KiB: 4 KiB of data at 0 and at 40960, holes between) at 20000;
 *          append.log O_WRONLY|O_APPEND; an O_TMPFILE file with content; large.bin (300000
 *          bytes of a pattern, several chunks of an encrypted set); all unlinked
 *   mmap   mapped.bin (3 pages 'a', 'b', 'c') mapped MAP_PRIVATE (page 1 written) and
 *          MAP_SHARED from page 1 (a byte of page 2 written), unlinked, one fd kept; a
 *          POSIX named semaphore (value 3, unlinked: /dev/shm/sem.* (deleted), as Python's
 *          multiprocessing has them)
 *   fifo   gone.fifo (mode 0640) open O_RDWR, O_RDONLY|O_NONBLOCK|O_NOFOLLOW and O_WRONLY, 13 bytes
 *          queued, unlinked
 *   cwd    the working directory gone.d (mode 0750), removed
 *   devzero  not a ghost: an fd of MAP_SHARED anonymous memory ("/dev/zero (deleted)", opened
 *          through /proc/self/map_files, zdtm's shmemfd), O_APPEND, 5 bytes, offset 3, mapped
 *          again shared and private
 *   exe    its own executable, deleted (run it from a copy)
 *   all    every state above, in one process (the CRIU interop program)
 *
 * The program sets the state, checks it once (so a test knows the check holds before the
 * dump), prints "ready", waits for SIGUSR1 (sent after the restore), checks again and prints
 * "ok" or "FAIL: why". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "deleted.h"

static int accmode(int fd) { return fcntl(fd, F_GETFL) & (O_ACCMODE | O_APPEND); }

/* --- files --- */
static int small_rw, small_ro, sparse, app, tmpf, large;
#define LARGE 300000

static char large_byte(long i) { return (char)(i * 7 + i / 4099); }
static const struct timespec mtime = { 1100000000, 123456000 };

static void small_line(char *b, int i) { snprintf(b, 13, "small-%05d\n", i); }

static void set_files(void)
{
	char line[16];
	small_rw = open("small.txt", O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (small_rw < 0)
		die("small.txt");
	for (int i = 0; i < 250; i++) {
		small_line(line, i);
		if (write(small_rw, line, 12) != 12)
			die("write small.txt");
	}
	if (fchmod(small_rw, 0751) || (getuid() == 0 && fchown(small_rw, 1234, 5678)))
		die("small.txt attributes");
	struct timespec ts[2] = { { 1000000000, 0 }, mtime };
	if (futimens(small_rw, ts))
		die("futimens");
	small_ro = open("small.txt", O_RDONLY | O_NOFOLLOW);
	sparse = open("sparse.bin", O_RDWR | O_CREAT | O_TRUNC, 0600);
	app = open("append.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
	tmpf = open(".", O_TMPFILE | O_RDWR, 0600);
	large = open("large.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (small_ro < 0 || sparse < 0 || app < 0 || tmpf < 0 || large < 0)
		die("open");
	static char lb[LARGE];
	for (long i = 0; i < LARGE; i++)
		lb[i] = large_byte(i);
	if (write(large, lb, LARGE) != LARGE)
		die("write large.bin");
	char blk[PAGE];
	memset(blk, 'A', PAGE);
	if (pwrite(sparse, blk, PAGE, 0) != PAGE)
		die("sparse");
	memset(blk, 'B', PAGE);
	if (pwrite(sparse, blk, PAGE, 40960) != PAGE || ftruncate(sparse, 65536))
		die("sparse");
	if (write(app, "line1\n", 6) != 6 || write(tmpf, "tmpfile-content", 15) != 15)
		die("write");
	if (lseek(small_rw, 100, SEEK_SET) != 100 || lseek(small_ro, 7, SEEK_SET) != 7 || lseek(sparse, 20000, SEEK_SET) != 20000)
		die("lseek");
	if (unlink("small.txt") || unlink("sparse.bin") || unlink("append.log") || unlink("large.bin"))
		die("unlink");
}

static int check_files(void)
{
	struct stat a, b, s, t;
	char buf[3000], line[16];
	CHECK(!fstat(small_rw, &a) && !fstat(small_ro, &b) && !fstat(sparse, &s) && !fstat(tmpf, &t), "fstat: %s", strerror(errno));
	CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev, "the two fds of small.txt are two files");
	CHECK(a.st_nlink == 0 && s.st_nlink == 0 && t.st_nlink == 0, "a name came back: nlink %ld %ld %ld", (long)a.st_nlink, (long)s.st_nlink, (long)t.st_nlink);
	CHECK(a.st_size == 3000 && s.st_size == 65536 && t.st_size == 15, "sizes %ld %ld %ld", (long)a.st_size, (long)s.st_size, (long)t.st_size);
	CHECK((a.st_mode & 07777) == 0751 && (s.st_mode & 07777) == 0600, "modes %o %o", a.st_mode, s.st_mode);
	if (getuid() == 0)
		CHECK(a.st_uid == 1234 && a.st_gid == 5678, "owner %d:%d", a.st_uid, a.st_gid);
	CHECK(a.st_mtim.tv_sec == mtime.tv_sec && a.st_mtim.tv_nsec == mtime.tv_nsec, "mtime %ld.%09ld", (long)a.st_mtim.tv_sec, a.st_mtim.tv_nsec);
	CHECK(lseek(small_rw, 0, SEEK_CUR) == 100 && lseek(small_ro, 0, SEEK_CUR) == 7 && lseek(sparse, 0, SEEK_CUR) == 20000, "offsets %ld %ld %ld",
	      (long)lseek(small_rw, 0, SEEK_CUR), (long)lseek(small_ro, 0, SEEK_CUR), (long)lseek(sparse, 0, SEEK_CUR));
	CHECK(accmode(small_rw) == O_RDWR && accmode(small_ro) == O_RDONLY && accmode(app) == (O_WRONLY | O_APPEND), "flags %#o %#o %#o",
	      accmode(small_rw), accmode(small_ro), accmode(app));
	CHECK((fcntl(small_ro, F_GETFL) & O_NOFOLLOW) && !(fcntl(small_rw, F_GETFL) & O_NOFOLLOW), "O_NOFOLLOW: %#o %#o",
	      fcntl(small_ro, F_GETFL), fcntl(small_rw, F_GETFL));
	CHECK(pread(small_ro, buf, 3000, 0) == 3000, "read small.txt: %s", strerror(errno));
	for (int i = 0; i < 250; i++) {
		small_line(line, i);
		CHECK(!memcmp(buf + 12 * i, line, 12), "small.txt line %d: %.12s", i, buf + 12 * i);
	}
	off_t hole = lseek(sparse, 0, SEEK_HOLE), data = lseek(sparse, PAGE, SEEK_DATA);
	CHECK(hole == PAGE && data == 40960, "sparse.bin: hole at %ld, data again at %ld", (long)hole, (long)data);
	CHECK(lseek(sparse, 20000, SEEK_SET) == 20000, "lseek back");
	CHECK(pread(sparse, buf, 1, 0) == 1 && buf[0] == 'A' && pread(sparse, buf, 1, 40960 + 4095) == 1 && buf[0] == 'B' &&
	      pread(sparse, buf, 1, 20000) == 1 && buf[0] == 0, "sparse.bin content");
	CHECK(pread(tmpf, buf, 15, 0) == 15 && !memcmp(buf, "tmpfile-content", 15), "O_TMPFILE content");
	static char lb[LARGE];
	CHECK(pread(large, lb, LARGE, 0) == LARGE && lseek(large, 0, SEEK_END) == LARGE, "large.bin size");
	for (long i = 0; i < LARGE; i++)
		CHECK(lb[i] == large_byte(i), "large.bin byte %ld", i);
	CHECK(deleted(small_rw, "/small.txt") && deleted(small_ro, "/small.txt") && deleted(sparse, "/sparse.bin") && deleted(app, "/append.log"),
	      "a /proc link is not NAME (deleted)");
	return 1;
}

/* --- mmap --- */
static char *priv, *shared;
static int mfd;
static sem_t *sem;

static void set_mmap(void)
{
	char blk[PAGE];
	mfd = open("mapped.bin", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (mfd < 0)
		die("mapped.bin");
	for (int i = 0; i < 3; i++) {
		memset(blk, 'a' + i, PAGE);
		if (write(mfd, blk, PAGE) != PAGE)
			die("write mapped.bin");
	}
	priv = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
	shared = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, PAGE);
	if (priv == MAP_FAILED || shared == MAP_FAILED)
		die("mmap");
	priv[PAGE] = 'X';
	shared[PAGE] = 'S';
	if (unlink("mapped.bin"))
		die("unlink mapped.bin");
	char name[64];
	snprintf(name, sizeof(name), "/imgtool-ghosts-%d", getpid());
	sem = sem_open(name, O_CREAT | O_EXCL, 0600, 3);
	if (sem == SEM_FAILED || sem_unlink(name))
		die("sem_open");
}

static int check_mmap(void)
{
	char c;
	int v = -1;
	CHECK(priv[0] == 'a' && priv[PAGE] == 'X' && priv[PAGE + 1] == 'b' && priv[2 * PAGE] == 'S' && priv[2 * PAGE + 1] == 'c',
	      "private mapping holds %c %c %c %c %c", priv[0], priv[PAGE], priv[PAGE + 1], priv[2 * PAGE], priv[2 * PAGE + 1]);
	CHECK(shared[0] == 'b' && shared[PAGE] == 'S', "shared mapping holds %c %c", shared[0], shared[PAGE]);
	shared[200] = 'Q'; /* a write through the shared mapping reaches the file */
	CHECK(pread(mfd, &c, 1, PAGE + 200) == 1 && c == 'Q', "a write to the shared mapping is not in the file");
	CHECK(deleted(mfd, "/mapped.bin"), "mapped.bin's fd is not NAME (deleted)");
	CHECK(sem_getvalue(sem, &v) == 0 && v == 3, "semaphore value %d, want 3", v);
	CHECK(sem_trywait(sem) == 0 && sem_post(sem) == 0, "the semaphore does not work: %s", strerror(errno));
	return 1;
}

/* --- fifo --- */
static int ff_rw, ff_ro, ff_wo;

static void set_fifo(void)
{
	if (mkfifo("gone.fifo", 0640) || chmod("gone.fifo", 0640))
		die("mkfifo");
	ff_rw = open("gone.fifo", O_RDWR);
	ff_ro = open("gone.fifo", O_RDONLY | O_NONBLOCK | O_NOFOLLOW);
	ff_wo = open("gone.fifo", O_WRONLY);
	if (ff_rw < 0 || ff_ro < 0 || ff_wo < 0 || write(ff_wo, "fifo-data-123", 13) != 13 || unlink("gone.fifo"))
		die("fifo");
}

static int check_fifo(void)
{
	struct stat st;
	int n = -1;
	CHECK(!fstat(ff_rw, &st) && S_ISFIFO(st.st_mode) && (st.st_mode & 07777) == 0640 && st.st_nlink == 0, "FIFO mode %o nlink %ld",
	      st.st_mode, (long)st.st_nlink);
	CHECK(ioctl(ff_ro, FIONREAD, &n) == 0 && n == 13, "FIFO holds %d bytes, want 13", n);
	CHECK(accmode(ff_rw) == O_RDWR && accmode(ff_ro) == O_RDONLY && accmode(ff_wo) == O_WRONLY, "FIFO flags");
	CHECK(fcntl(ff_ro, F_GETFL) & O_NONBLOCK, "FIFO lost O_NONBLOCK");
	CHECK(fcntl(ff_ro, F_GETFL) & O_NOFOLLOW, "FIFO lost O_NOFOLLOW");
	CHECK(deleted(ff_rw, "/gone.fifo") && deleted(ff_ro, "/gone.fifo") && deleted(ff_wo, "/gone.fifo"), "a FIFO fd is not NAME (deleted)");
	return 1;
}

/* --- cwd --- */
static char cwd[4096];

static void set_cwd(void)
{
	if (mkdir("gone.d", 0750) || chmod("gone.d", 0750) || chdir("gone.d") || rmdir("../gone.d"))
		die("cwd");
	ssize_t n = readlink("/proc/self/cwd", cwd, sizeof(cwd) - 1);
	if (n < 0)
		die("readlink cwd");
	cwd[n] = 0;
}

static int check_cwd(void)
{
	char now[4096];
	struct stat st;
	ssize_t n = readlink("/proc/self/cwd", now, sizeof(now) - 1);
	CHECK(n > 0, "readlink cwd: %s", strerror(errno));
	now[n] = 0;
	CHECK(!strcmp(now, cwd), "cwd %s, want %s", now, cwd);
	CHECK(!stat(".", &st) && S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0750 && st.st_nlink == 0, "cwd mode %o nlink %ld", st.st_mode,
	      (long)st.st_nlink);
	return 1;
}

/* --- devzero --- */
static int zfd;
static char *zshared, *zpriv;

static void set_devzero(void)
{
	char path[128];
	char *a = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		die("mmap");
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (long)a, (long)a + 2 * PAGE);
	zfd = open(path, O_RDWR);
	if (zfd < 0 || munmap(a, 2 * PAGE) || ftruncate(zfd, 0) || fcntl(zfd, F_SETFL, O_APPEND) || write(zfd, "hello", 5) != 5 ||
	    lseek(zfd, 3, SEEK_SET) != 3)
		die("devzero");
	zshared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, zfd, 0);
	zpriv = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, zfd, 0);
	if (zshared == MAP_FAILED || zpriv == MAP_FAILED)
		die("mmap devzero");
	zpriv[0] = 'P';
}

static int check_devzero(void)
{
	char buf[5];
	CHECK(lseek(zfd, 0, SEEK_CUR) == 3 && accmode(zfd) == (O_RDWR | O_APPEND), "offset %ld flags %#o", (long)lseek(zfd, 0, SEEK_CUR), accmode(zfd));
	CHECK(lseek(zfd, 0, SEEK_END) == 5 && lseek(zfd, 3, SEEK_SET) == 3, "size");
	CHECK(pread(zfd, buf, 5, 0) == 5 && !memcmp(buf, "hello", 5), "content %.5s", buf);
	CHECK(zshared[1] == 'e' && zpriv[0] == 'P' && zpriv[1] == 'e', "mappings hold %c %c %c", zshared[1], zpriv[0], zpriv[1]);
	zshared[4] = 'O'; /* shared with the fd's file */
	CHECK(pread(zfd, buf, 5, 0) == 5 && buf[4] == 'O', "a write to the shared mapping is not in the file");
	zshared[4] = 'o';
	return 1;
}

/* --- exe --- */
static char exe[4096];

static void set_exe(void)
{
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		die("readlink exe");
	exe[n] = 0;
	if (unlink(exe))
		die("unlink exe");
	strcat(exe, " (deleted)");
}

static int check_exe(void)
{
	char now[4096];
	ssize_t n = readlink("/proc/self/exe", now, sizeof(now) - 1);
	CHECK(n > 0, "readlink exe: %s", strerror(errno));
	now[n] = 0;
	CHECK(!strcmp(now, exe), "exe %s, want %s", now, exe);
	return 1;
}

static int all;

static int check(const char *mode)
{
	if ((all || !strcmp(mode, "files")) && !check_files())
		return 0;
	if ((all || !strcmp(mode, "mmap")) && !check_mmap())
		return 0;
	if ((all || !strcmp(mode, "fifo")) && !check_fifo())
		return 0;
	if ((all || !strcmp(mode, "cwd")) && !check_cwd())
		return 0;
	if ((all || !strcmp(mode, "devzero")) && !check_devzero())
		return 0;
	if ((all || !strcmp(mode, "exe")) && !check_exe())
		return 0;
	return 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	signal(SIGUSR1, on_usr1);
	all = !strcmp(mode, "all");
	if (all || !strcmp(mode, "files"))
		set_files();
	if (all || !strcmp(mode, "mmap"))
		set_mmap();
	if (all || !strcmp(mode, "fifo"))
		set_fifo();
	if (all || !strcmp(mode, "devzero"))
		set_devzero();
	if (all || !strcmp(mode, "exe"))
		set_exe();
	if (all || !strcmp(mode, "cwd"))
		set_cwd(); /* last: the other states use relative names */
	if (!all && strcmp(mode, "files") && strcmp(mode, "mmap") && strcmp(mode, "fifo") && strcmp(mode, "cwd") && strcmp(mode, "devzero") &&
	    strcmp(mode, "exe")) {
		fprintf(stderr, "usage: ghosts files|mmap|fifo|cwd|devzero|exe|all\n");
		return 2;
	}
	return check_twice(check, mode);
}

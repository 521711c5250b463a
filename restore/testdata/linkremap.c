/* linkremap: files a process uses whose name it opened them by was removed while another
 * name of each remains (CRIU's link-remap), set up in the working directory before a dump
 * and checked after the restore. One state per run, chosen by argv[1]:
 *
 *   files  a.txt (3 pages 'a', 'b', 'c', mode 0640) open O_RDWR at offset 100, mapped
 *          MAP_SHARED (pages 1-2) and MAP_PRIVATE (page 1 written 'X'), watched by an
 *          inotify (IN_MODIFY), linked as b.txt, then a.txt unlinked; f.fifo open O_RDWR
 *          with 5 bytes queued, linked as g.fifo, then f.fifo unlinked
 *   exe    its own executable, linked as NAME.kept and NAME unlinked (run it from a copy)
 *   all    both
 *
 * The check: each fd and mapping is the inode the other name has (and that inode has no
 * third name: the links a dump made are gone), with the same content; writes through the
 * fd and the shared mapping reach the other name (the one through the fd reported by the
 * inotify watch); each fd is still "NAME (deleted)" in /proc; no link_remap.* in the
 * directory. It sets the state, checks it once, prints
 * "ready pid=N", waits for SIGUSR1 (sent after the restore), checks again and prints "ok"
 * or "FAIL: why". */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "deleted.h"

/* same tells whether st is the inode of name, with one name (name's) and no other. */
static int same(const struct stat *st, const char *name)
{
	struct stat o;
	return !stat(name, &o) && o.st_dev == st->st_dev && o.st_ino == st->st_ino && st->st_nlink == 1;
}

/* no_links tells whether the directory dir holds no link_remap.* name. */
static int no_links(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int ok = d != NULL;
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, "link_remap.", 11))
			ok = 0;
	if (d)
		closedir(d);
	return ok;
}

/* --- files --- */
static int fd, ffd, ify, wd;
static char *shared, *priv;

static void set_files(void)
{
	char blk[PAGE];
	fd = open("a.txt", O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (fd < 0 || fchmod(fd, 0640))
		die("a.txt");
	for (int i = 0; i < 3; i++) {
		memset(blk, 'a' + i, PAGE);
		if (write(fd, blk, PAGE) != PAGE)
			die("write a.txt");
	}
	ify = inotify_init1(IN_NONBLOCK);
	if (ify < 0 || (wd = inotify_add_watch(ify, "a.txt", IN_MODIFY)) < 0)
		die("inotify");
	shared = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, PAGE);
	priv = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (shared == MAP_FAILED || priv == MAP_FAILED)
		die("mmap");
	priv[PAGE] = 'X';
	if (lseek(fd, 100, SEEK_SET) != 100 || link("a.txt", "b.txt") || unlink("a.txt"))
		die("link a.txt");
	if (mkfifo("f.fifo", 0640) || (ffd = open("f.fifo", O_RDWR)) < 0 || write(ffd, "fifo!", 5) != 5 || link("f.fifo", "g.fifo") ||
	    unlink("f.fifo"))
		die("fifo");
}

/* modified reads every event queued on the inotify (none is left for the dump) and tells
 * whether one was IN_MODIFY on the watch of a.txt. */
static int modified(void)
{
	char buf[4096] __attribute__((aligned(8)));
	int seen = 0;
	ssize_t n;
	while ((n = read(ify, buf, sizeof(buf))) > 0)
		for (char *p = buf; p < buf + n; p += sizeof(struct inotify_event) + ((struct inotify_event *)p)->len) {
			struct inotify_event *e = (struct inotify_event *)p;
			if (e->wd == wd && e->mask & IN_MODIFY)
				seen = 1;
		}
	return seen;
}

/* map_inode stats the file behind the mapping at addr. */
static int map_inode(void *addr, size_t len, struct stat *st)
{
	char p[128];
	snprintf(p, sizeof(p), "/proc/self/map_files/%lx-%lx", (long)addr, (long)addr + (long)len);
	return stat(p, st);
}

static int check_files(void)
{
	struct stat st;
	char c = 0;
	int other, n = -1;
	CHECK(!fstat(fd, &st) && same(&st, "b.txt") && (st.st_mode & 07777) == 0640 && st.st_size == 3 * PAGE,
	      "a.txt's fd is not b.txt's inode alone (nlink %ld, mode %o, size %ld)", (long)st.st_nlink, st.st_mode, (long)st.st_size);
	CHECK(lseek(fd, 0, SEEK_CUR) == 100, "a.txt's offset %ld, want 100", (long)lseek(fd, 0, SEEK_CUR));
	CHECK((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR, "a.txt is not open O_RDWR");
	CHECK(deleted(fd, "/a.txt"), "a.txt's fd is not NAME (deleted)");
	CHECK(!map_inode(shared, 2 * PAGE, &st) && same(&st, "b.txt"), "the shared mapping is not b.txt's inode");
	CHECK(!map_inode(priv, 3 * PAGE, &st) && same(&st, "b.txt"), "the private mapping is not b.txt's inode");
	CHECK(shared[0] == 'b' && shared[PAGE] == 'c', "shared mapping holds %c %c", shared[0], shared[PAGE]);
	CHECK(priv[0] == 'a' && priv[PAGE] == 'X' && priv[PAGE + 1] == 'b' && priv[2 * PAGE] == 'c', "private mapping holds %c %c %c %c", priv[0],
	      priv[PAGE], priv[PAGE + 1], priv[2 * PAGE]);
	other = open("b.txt", O_RDONLY);
	CHECK(other >= 0, "b.txt: %s", strerror(errno));
	/* writes through the fd and through the shared mapping reach the other name; each is
	 * put back, so that the check can run again */
	CHECK(pwrite(fd, "W", 1, 7) == 1 && pread(other, &c, 1, 7) == 1 && c == 'W', "a write to a.txt's fd is not in b.txt");
	CHECK(pwrite(fd, "a", 1, 7) == 1, "pwrite");
	CHECK(modified(), "the inotify watch of a.txt did not report the write");
	shared[PAGE + 9] = 'S';
	CHECK(pread(other, &c, 1, 2 * PAGE + 9) == 1 && c == 'S', "a write to the shared mapping is not in b.txt");
	shared[PAGE + 9] = 'c';
	close(other);
	CHECK(!fstat(ffd, &st) && S_ISFIFO(st.st_mode) && same(&st, "g.fifo"), "f.fifo's fd is not g.fifo's inode alone (nlink %ld)",
	      (long)st.st_nlink);
	CHECK(ioctl(ffd, FIONREAD, &n) == 0 && n == 5, "the FIFO holds %d bytes, want 5", n);
	CHECK(deleted(ffd, "/f.fifo"), "f.fifo's fd is not NAME (deleted)");
	CHECK(no_links("."), "a link_remap.* file is left in the directory");
	return 1;
}

/* --- exe --- */
static char exe[4096], kept[4200], exedir[4096];

static void set_exe(void)
{
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		die("readlink exe");
	exe[n] = 0;
	snprintf(kept, sizeof(kept), "%s.kept", exe);
	strcpy(exedir, exe);
	*strrchr(exedir, '/') = 0;
	if (link(exe, kept) || unlink(exe))
		die("link exe");
	strcat(exe, " (deleted)");
}

static int check_exe(void)
{
	char now[4096];
	struct stat st;
	ssize_t n = readlink("/proc/self/exe", now, sizeof(now) - 1);
	CHECK(n > 0, "readlink exe: %s", strerror(errno));
	now[n] = 0;
	CHECK(!strcmp(now, exe), "exe %s, want %s", now, exe);
	CHECK(!stat("/proc/self/exe", &st) && same(&st, kept), "the executable is not %s's inode alone (nlink %ld)", kept, (long)st.st_nlink);
	CHECK(no_links(exedir), "a link_remap.* file is left in %s", exedir);
	return 1;
}

static int all;

static int check(const char *mode)
{
	if ((all || !strcmp(mode, "files")) && !check_files())
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
	if (!all && strcmp(mode, "files") && strcmp(mode, "exe")) {
		fprintf(stderr, "usage: linkremap files|exe|all\n");
		return 2;
	}
	if (all || !strcmp(mode, "files"))
		set_files();
	if (all || !strcmp(mode, "exe"))
		set_exe();
	return check_twice(check, mode);
}

/*
 * files: file descriptors of several kinds at chosen numbers, with offsets,
 * status flags and fd flags, an unlinked-but-open file, a mapped-unlinked-
 * closed file, a directory fd and the cwd.
 */
#include "common.h"

#include <sys/mman.h>

#define MiB (1024UL * 1024UL)

enum {
	FD_APPEND = 3,   /* regular file, O_RDWR|O_APPEND, FD_CLOEXEC */
	FD_RDONLY = 7,   /* regular file, O_RDONLY|O_NONBLOCK at 12345 */
	FD_DIR = 9,      /* directory */
	FD_NULL = 10,    /* /dev/null */
	FD_ZERO = 11,    /* /dev/zero */
	FD_URANDOM = 12, /* /dev/urandom */
	FD_DELETED = 100 /* unlinked file, 8 MiB */
};
static const int fds[] = {0, 1, 2, FD_APPEND, FD_RDONLY, FD_DIR, FD_NULL, FD_ZERO, FD_URANDOM, FD_DELETED};
#define NFDS (int)(sizeof(fds) / sizeof(fds[0]))

struct fdstate {
	off_t off;
	int fl, fdfl;
	struct stat st;
	char link[4096];
};
static struct fdstate before[NFDS];
static char fdlist_before[4096];
static char cwd_before[4096];
static char *mapped;
static uint64_t mapped_sum, deleted_sum;
static off_t append_size;

static void at(int fd, const char *path, int flags, mode_t mode)
{
	int f = open(path, flags, mode);
	if (f < 0)
		die(path);
	if (f != fd) {
		if (dup2(f, fd) < 0)
			die("dup2");
		close(f);
	}
}

static void snapshot(int fd, struct fdstate *s)
{
	char p[64];
	memset(s, 0, sizeof(*s));
	s->off = lseek(fd, 0, SEEK_CUR);
	s->fl = fcntl(fd, F_GETFL);
	s->fdfl = fcntl(fd, F_GETFD);
	fstat(fd, &s->st);
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, s->link, sizeof(s->link) - 1);
	s->link[n > 0 ? n : 0] = 0;
}

static void list_fds(char *dst, size_t cap)
{
	int nums[1024], n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d)) && n < 1024)
		if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
			nums[n++] = atoi(e->d_name);
	if (d)
		closedir(d);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && nums[j - 1] > nums[j]; j--) {
			int t = nums[j];
			nums[j] = nums[j - 1];
			nums[j - 1] = t;
		}
	size_t off = 0;
	dst[0] = 0;
	for (int i = 0; i < n && off < cap - 16; i++)
		off += (size_t)snprintf(dst + off, cap - off, "%d ", nums[i]);
}

static uint64_t hash_fd(int fd, size_t len)
{
	static char buf[8 * MiB];
	if (len > sizeof(buf) || pread(fd, buf, len, 0) != (ssize_t)len)
		return 0;
	return fnv1a_words(buf, len);
}

int main(int argc, char **argv)
{
	static char buf[8 * MiB];
	char path[4096 + 128], sub[2048 + 64];
	target_init(argc, argv);
	snprintf(sub, sizeof(sub), "%s/files-dir", work_dir);
	mkdir(sub, 0700);

	snprintf(path, sizeof(path), "%s/append.txt", sub);
	at(FD_APPEND, path, O_RDWR | O_APPEND | O_CREAT | O_TRUNC, 0600);
	for (int i = 0; i < 100; i++)
		dprintf(FD_APPEND, "line %d\n", i);
	lseek(FD_APPEND, 100, SEEK_SET);
	fcntl(FD_APPEND, F_SETFD, FD_CLOEXEC);
	append_size = lseek(FD_APPEND, 0, SEEK_END);
	lseek(FD_APPEND, 100, SEEK_SET);

	snprintf(path, sizeof(path), "%s/readonly.dat", sub);
	fill_pattern(buf, 64 * 1024, 0x7eadull);
	at(FD_RDONLY, path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (write(FD_RDONLY, buf, 64 * 1024) != 64 * 1024)
		die("write");
	close(FD_RDONLY);
	at(FD_RDONLY, path, O_RDONLY | O_NONBLOCK, 0);
	lseek(FD_RDONLY, 12345, SEEK_SET);

	at(FD_DIR, sub, O_RDONLY | O_DIRECTORY, 0);
	at(FD_NULL, "/dev/null", O_WRONLY, 0);
	at(FD_ZERO, "/dev/zero", O_RDONLY, 0);
	at(FD_URANDOM, "/dev/urandom", O_RDONLY | O_CLOEXEC, 0);

	snprintf(path, sizeof(path), "%s/deleted.dat", sub);
	at(FD_DELETED, path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	fill_pattern(buf, 8 * MiB, 0xde1);
	if (write(FD_DELETED, buf, 8 * MiB) != (ssize_t)(8 * MiB))
		die("write deleted");
	deleted_sum = fnv1a_words(buf, 8 * MiB);
	lseek(FD_DELETED, 4 * MiB + 17, SEEK_SET);
	unlink(path);

	/* Mapped, then unlinked and closed: only the mapping keeps it. */
	snprintf(path, sizeof(path), "%s/mapped.dat", sub);
	int mfd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (mfd < 0 || ftruncate(mfd, 1 * MiB))
		die("mapped file");
	mapped = mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (mapped == MAP_FAILED)
		die("mmap");
	fill_pattern(mapped, 1 * MiB, 0x3a9);
	mapped_sum = fnv1a_words(mapped, 1 * MiB);
	close(mfd);
	unlink(path);

	if (chdir(sub))
		die("chdir");
	if (!getcwd(cwd_before, sizeof(cwd_before)))
		die("getcwd");

	for (int i = 0; i < NFDS; i++)
		snapshot(fds[i], &before[i]);
	list_fds(fdlist_before, sizeof(fdlist_before));
	ready();
	wait_trigger(NULL);

	check_identity();
	char fdlist[4096], cwd[4096] = "";
	list_fds(fdlist, sizeof(fdlist));
	check("fd-numbers", !strcmp(fdlist, fdlist_before), "fds '%s', were '%s'", fdlist, fdlist_before);
	if (!getcwd(cwd, sizeof(cwd)))
		cwd[0] = 0;
	check("cwd", !strcmp(cwd, cwd_before), "cwd %s, was %s", cwd, cwd_before);

	for (int i = 0; i < NFDS; i++) {
		struct fdstate now, *b = &before[i];
		char name[64];
		int fd = fds[i];
		snapshot(fd, &now);
		snprintf(name, sizeof(name), "fd%d-link", fd);
		check(name, !strcmp(now.link, b->link), "%s, was %s", now.link, b->link);
		snprintf(name, sizeof(name), "fd%d-offset", fd);
		/* stdout and stderr append to the log, which moves their offset. */
		if (fd != 1 && fd != 2)
			check(name, now.off == b->off, "offset %lld, was %lld", (long long)now.off, (long long)b->off);
		snprintf(name, sizeof(name), "fd%d-flags", fd);
		check(name, now.fl == b->fl && now.fdfl == b->fdfl, "F_GETFL %#o F_GETFD %d, was %#o %d", now.fl,
		      now.fdfl, b->fl, b->fdfl);
		snprintf(name, sizeof(name), "fd%d-identity", fd);
		if (fd == FD_DELETED)
			check(name, now.st.st_nlink == 0 && now.st.st_size == b->st.st_size &&
					    S_ISREG(now.st.st_mode),
			      "nlink %lu size %lld, was %lu %lld", (unsigned long)now.st.st_nlink,
			      (long long)now.st.st_size, (unsigned long)b->st.st_nlink, (long long)b->st.st_size);
		else
			check(name, now.st.st_ino == b->st.st_ino && now.st.st_dev == b->st.st_dev &&
					    now.st.st_rdev == b->st.st_rdev && now.st.st_mode == b->st.st_mode,
			      "ino %lu dev %#lx, was %lu %#lx", (unsigned long)now.st.st_ino,
			      (unsigned long)now.st.st_dev, (unsigned long)b->st.st_ino, (unsigned long)b->st.st_dev);
	}

	uint64_t h = hash_fd(FD_DELETED, 8 * MiB);
	check("deleted-file-content", h == deleted_sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, deleted_sum);
	h = fnv1a_words(mapped, 1 * MiB);
	check("mapped-unlinked-content", h == mapped_sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, mapped_sum);

	char c[16];
	ssize_t n = read(FD_RDONLY, c, 5);
	check("rdonly-read-at-offset", n == 5 && lseek(FD_RDONLY, 0, SEEK_CUR) == 12350,
	      "read %zd, offset now %lld", n, (long long)lseek(FD_RDONLY, 0, SEEK_CUR));
	check("append-writes-at-end", write(FD_APPEND, "Z", 1) == 1 && lseek(FD_APPEND, 0, SEEK_CUR) == append_size + 1,
	      "offset after write %lld, size was %lld", (long long)lseek(FD_APPEND, 0, SEEK_CUR),
	      (long long)append_size);
	int rel = openat(FD_DIR, "readonly.dat", O_RDONLY | O_CLOEXEC);
	struct stat rst;
	check("dirfd-openat", rel >= 0 && !fstat(rel, &rst) && rst.st_ino == before[4].st.st_ino,
	      "openat: %s", rel < 0 ? strerror(errno) : "other inode");
	if (rel >= 0)
		close(rel);
	check("fchdir", fchdir(FD_DIR) == 0, "fchdir: %s", strerror(errno));
	check("dev-null-write", write(FD_NULL, "x", 1) == 1, "write: %s", strerror(errno));
	memset(c, 1, sizeof(c));
	check("dev-zero-read", read(FD_ZERO, c, sizeof(c)) == sizeof(c) && !memcmp(c, (char[16]){0}, 16),
	      "read /dev/zero");
	uint64_t r1 = 0, r2 = 0;
	check("dev-urandom-read", read(FD_URANDOM, &r1, 8) == 8 && read(FD_URANDOM, &r2, 8) == 8 && r1 != r2,
	      "read /dev/urandom");
	return finish();
}

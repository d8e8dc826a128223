/*
 * mapflock — an exclusive flock that only a mapping holds, as a JVM holds
 * one on its perf data file (/tmp/hsperfdata_USER/PID): open, flock,
 * ftruncate, mmap MAP_SHARED, close. No fd shows the lock; the mapping's
 * open file description keeps it.
 *
 *   mapflock TRIGGER
 *
 * On the trigger: the mapping holds what the process wrote; /proc/locks
 * shows this process's exclusive flock on the file; a new open of the
 * file cannot take a flock (EWOULDBLOCK: another open file description
 * holds it); once the mapping is unmapped, the lock is gone with it and
 * the new open takes it.
 */
#include "common.h"

#include <sys/file.h>
#include <sys/mman.h>

enum { SIZE = 32768 };

static int locked_in_proc_locks(ino_t ino)
{
	char buf[65536];
	if (read_file("/proc/locks", buf, sizeof(buf)) < 0)
		return -1;
	char want[64];
	snprintf(want, sizeof(want), "FLOCK  ADVISORY  WRITE %d ", getpid());
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		char *m = strstr(l, want);
		char *nl = strchr(l, '\n');
		if (!m || (nl && m > nl))
			continue;
		unsigned long long i = 0;
		char *colon = strrchr(m, ':');
		if (colon && sscanf(colon + 1, "%llu", &i) == 1 && i == (unsigned long long)ino)
			return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	char path[2100];
	snprintf(path, sizeof(path), "%s/hsperfdata-like", work_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0 || ftruncate(fd, SIZE) < 0)
		die("open and lock");
	char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("fstat");
	close(fd);
	fill_pattern(p, SIZE, 42);
	uint64_t sum = fnv1a(p, SIZE);
	ready();
	wait_trigger(NULL);

	check_identity();
	check("contents", fnv1a(p, SIZE) == sum, "the mapping's contents changed");
	check("proc-locks", locked_in_proc_locks(st.st_ino) == 1, "/proc/locks shows no exclusive flock of pid %d on inode %llu",
	      getpid(), (unsigned long long)st.st_ino);
	int again = open(path, O_RDWR | O_CLOEXEC);
	int r = flock(again, LOCK_EX | LOCK_NB);
	check("held-by-mapping", again >= 0 && r < 0 && errno == EWOULDBLOCK, "a new open took the flock: %d (%s)", r,
	      r < 0 ? strerror(errno) : "");
	munmap(p, SIZE);
	r = flock(again, LOCK_EX | LOCK_NB);
	check("gone-with-mapping", r == 0, "the flock outlived the mapping: %s", r < 0 ? strerror(errno) : "");
	return finish();
}

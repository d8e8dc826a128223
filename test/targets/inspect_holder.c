/*
 * inspect_holder — holds deleted files and shared memory for the tests of
 * `cryo deleted` and `cryo maps`.
 *
 *   inspect_holder TRIGGER DIR [map=MiB] [open=MiB] [both=MiB] [memfd=MiB] [share=MiB]
 *
 * map:   creates DIR/mapped.bin, maps it MAP_SHARED, closes and unlinks it
 *        (only the mapping holds it; it is mapped as two VMAs).
 * open:  creates DIR/open.bin, unlinks it and keeps the fd open.
 * both:  creates DIR/both.bin, maps it, unlinks it and keeps the fd open.
 * memfd: a memfd "inspect-memfd", filled, mapped shared, fd kept open.
 * share: MAP_SHARED|MAP_ANONYMOUS memory, filled, then a child is forked
 *        that touches every page too, so both map all of it.
 *
 * For each it prints what the tests must find, measured with fstat before
 * anything is unlinked:
 *   FILE NAME DEV_MAJOR:DEV_MINOR INO SIZE BLOCKS FD
 *   CHILD PID
 * then "PID <pid>" and "READY". It exits on the trigger file, or when its
 * parent (the test) goes away; the child exits with it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
	printf("FAIL %s: %s\n", what, strerror(errno));
	exit(1);
}

static void report(const char *name, int fd, int keep_fd)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("fstat");
	printf("FILE %s %u:%u %lu %lld %lld %d\n", name, major(st.st_dev), minor(st.st_dev),
	       (unsigned long)st.st_ino, (long long)st.st_size, (long long)st.st_blocks, keep_fd ? fd : -1);
}

static void fill(int fd, size_t size)
{
	static char buf[1 << 16];
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (char)(i * 7 + 1);
	for (size_t done = 0; done < size;) {
		size_t n = size - done < sizeof(buf) ? size - done : sizeof(buf);
		ssize_t w = write(fd, buf, n);
		if (w <= 0)
			die("write");
		done += (size_t)w;
	}
	if (fsync(fd) < 0 && errno != EINVAL)
		die("fsync");
}

/* held_file creates DIR/NAME of size bytes; maps it if map, keeps it open if keep. */
static void held_file(const char *dir, const char *name, size_t size, int map, int keep)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die(path);
	fill(fd, size);
	report(name, fd, keep);
	if (map) {
		char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (p == MAP_FAILED)
			die("mmap");
		/* Two VMAs of one file: the report must still count one file. */
		if (mprotect(p, 4096, PROT_READ) < 0)
			die("mprotect");
	}
	if (unlink(path) < 0)
		die("unlink");
	if (!keep)
		close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s TRIGGER DIR [map=MiB] [open=MiB] [both=MiB] [memfd=MiB] [share=MiB]\n", argv[0]);
		return 2;
	}
	const char *trigger = argv[1], *dir = argv[2];
	pid_t parent = getppid();
	pid_t child = 0;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 3; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq)
			return 2;
		size_t size = (size_t)atol(eq + 1) << 20;
		*eq = 0;
		if (!strcmp(argv[i], "map")) {
			held_file(dir, "mapped.bin", size, 1, 0);
		} else if (!strcmp(argv[i], "open")) {
			held_file(dir, "open.bin", size, 0, 1);
		} else if (!strcmp(argv[i], "both")) {
			held_file(dir, "both.bin", size, 1, 1);
		} else if (!strcmp(argv[i], "memfd")) {
			int fd = memfd_create("inspect-memfd", MFD_CLOEXEC);
			if (fd < 0)
				die("memfd_create");
			fill(fd, size);
			if (mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED)
				die("mmap memfd");
			report("memfd", fd, 1);
		} else if (!strcmp(argv[i], "share")) {
			char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
			if (p == MAP_FAILED)
				die("mmap shared");
			memset(p, 0x5a, size);
			int ready[2];
			if (pipe(ready) < 0)
				die("pipe");
			fflush(stdout);
			pid_t me = getpid();
			child = fork();
			if (child < 0)
				die("fork");
			if (child == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				if (getppid() != me)
					_exit(1);
				volatile char sum = 0;
				for (size_t off = 0; off < size; off += 4096)
					sum += p[off];
				(void)sum;
				close(ready[0]);
				if (write(ready[1], "x", 1) != 1)
					_exit(1);
				for (;;)
					pause();
			}
			close(ready[1]);
			char c;
			if (read(ready[0], &c, 1) != 1)
				die("child ready");
			close(ready[0]);
			printf("CHILD %d\n", child);
		} else {
			return 2;
		}
	}
	printf("PID %d\nREADY\n", getpid());
	for (;;) {
		if (access(trigger, F_OK) == 0 || getppid() != parent)
			break;
		usleep(5000);
	}
	if (child > 0) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	printf("RESULT 0 passed, 0 failed\n");
	return 0;
}

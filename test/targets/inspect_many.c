/*
 * inspect_many — one of the ~2,000 processes of bench/deleted.
 *
 *   inspect_many DIR INDEX NMAPS
 *
 * Maps the files DIR/shared-* (created by the bench), then one-page anonymous
 * regions with alternating protections (so that the kernel cannot merge
 * them) until the process has about NMAPS mappings. Every fourth process
 * also maps a 64 KiB file of its own and unlinks it. Prints "R <pid>" on
 * stdout (one write, so lines from many processes sharing a pipe do not
 * interleave) and sleeps until its parent goes away or it is killed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int count_maps(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	int n = 0, c;
	if (!f)
		return 0;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	const char *dir = argv[1];
	int idx = atoi(argv[2]), nmaps = atoi(argv[3]);
	pid_t parent = getppid();
	char path[4096];

	DIR *d = opendir(dir);
	if (!d)
		return 1;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, "shared-", 7) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || mmap(NULL, 65536, PROT_READ, MAP_PRIVATE, fd, 0) == MAP_FAILED)
			return 1;
		close(fd);
	}
	closedir(d);
	if (idx % 4 == 0) {
		snprintf(path, sizeof(path), "%s/del-%d", dir, idx);
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		static char buf[65536];
		if (fd < 0 || write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
			return 1;
		if (mmap(NULL, sizeof(buf), PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED)
			return 1;
		close(fd);
		unlink(path);
	}
	for (int i = count_maps(); i < nmaps; i++) {
		int prot = i % 2 ? PROT_READ : PROT_READ | PROT_WRITE;
		if (mmap(NULL, 4096, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
			return 1;
	}
	char line[32];
	int n = snprintf(line, sizeof(line), "R %d\n", getpid());
	if (write(1, line, (size_t)n) != n)
		return 1;
	while (getppid() == parent)
		sleep(1);
	return 0;
}

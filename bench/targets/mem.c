/*
 * mem: a benchmark target for cryo. It maps anonymous memory, writes to some
 * of its pages as argv says, prints READY on stdout and then waits to be
 * dumped (or killed).
 *
 *   mem all   NPAGES           write every page of an NPAGES region (1 VMA)
 *   mem every NPAGES K         write every K-th page (scattered)
 *   mem runs  NPAGES RUN K     write the first RUN pages of every RUN*K pages
 *   mem vmas  NPAGES           write every page, then make every other page
 *                              read-only: NPAGES VMAs of one touched page each
 *
 * Every written page is filled with a pattern (no zero pages). The region is
 * marked MADV_NOHUGEPAGE so that "a page" is 4 KiB whatever the machine's
 * transparent hugepage setting is.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL

static void fill(unsigned char *p)
{
	uint64_t *w = (uint64_t *)p;
	uint64_t v = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < PAGE / sizeof(*w); i++)
		w[i] = v + i;
}

static void die(const char *what)
{
	fprintf(stderr, "mem: %s: %s\n", what, strerror(errno));
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: mem all|every|runs|vmas NPAGES [ARGS]\n");
		return 2;
	}
	const char *mode = argv[1];
	size_t npages = strtoul(argv[2], NULL, 0);
	size_t len = npages * PAGE;
	unsigned char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		die("mmap");
	if (madvise(m, len, MADV_NOHUGEPAGE) != 0)
		die("madvise");
	size_t touched = 0;
	if (strcmp(mode, "all") == 0 || strcmp(mode, "vmas") == 0) {
		for (size_t i = 0; i < npages; i++, touched++)
			fill(m + i * PAGE);
		if (strcmp(mode, "vmas") == 0)
			for (size_t i = 1; i < npages; i += 2)
				if (mprotect(m + i * PAGE, PAGE, PROT_READ) != 0)
					die("mprotect");
	} else if (strcmp(mode, "every") == 0 && argc == 4) {
		size_t k = strtoul(argv[3], NULL, 0);
		for (size_t i = 0; i < npages; i += k, touched++)
			fill(m + i * PAGE);
	} else if (strcmp(mode, "runs") == 0 && argc == 5) {
		size_t run = strtoul(argv[3], NULL, 0), k = strtoul(argv[4], NULL, 0);
		for (size_t b = 0; b < npages; b += run * k)
			for (size_t i = b; i < b + run && i < npages; i++, touched++)
				fill(m + i * PAGE);
	} else {
		fprintf(stderr, "mem: bad arguments\n");
		return 2;
	}
	printf("READY %zu\n", touched);
	fflush(stdout);
	for (;;)
		pause();
}

/*
 * mlock: memory locked every way a program can lock it, checked after the
 * trigger by the process itself: each region's VmFlags (lo, lf) and smaps
 * Locked:, which of its pages are resident (mincore), VmLck, and whether a
 * mapping made after the trigger is locked (mlockall's MCL_FUTURE).
 *
 *   mlock TRIGGER [ranges|all]
 *
 * ranges (the default): mlock of a whole region, mlock2(MLOCK_ONFAULT) of a
 * region only partly touched, mlock of the middle of a region (the VMA
 * split in three), a locked PROT_NONE region, then
 * mlockall(MCL_FUTURE|MCL_ONFAULT) and a region mapped after it.
 * all: mlockall(MCL_CURRENT|MCL_FUTURE): every VMA locked and resident.
 */
#include "common.h"

#include <sys/mman.h>

#define PAGE 4096UL

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef MCL_ONFAULT
#define MCL_ONFAULT 4
#endif

struct region {
	const char *name;
	char *addr;
	size_t len;
	uint64_t sum;
	size_t sum_off, sum_len; /* the pages checksummed: reading an untouched
				  * page would map the zero page there */
	const char *want; /* VmFlags mnemonics it must show */
	char flags[256], locked[64];
	unsigned char resident[64];
};

static struct region regions[16];
static int n_regions;
static char smaps[2 * 1024 * 1024];
static char status[16384];
static char vmlck_before[64], vmlck_after[64];

static struct region *add(const char *name, char *addr, size_t len, const char *want)
{
	struct region *r = &regions[n_regions++];
	r->name = name, r->addr = addr, r->len = len, r->want = want;
	r->sum_len = len;
	return r;
}

static char *anon(size_t len, int prot)
{
	void *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

/* vma_of copies the VmFlags and Locked: lines of the VMA holding addr. */
static void vma_of(void *addr, char *flags, size_t fcap, char *locked, size_t lcap)
{
	uintptr_t a = (uintptr_t)addr;
	int in = 0;
	snprintf(flags, fcap, "(no vma)");
	snprintf(locked, lcap, "(none)");
	for (char *line = smaps; *line;) {
		char *nl = strchr(line, '\n');
		int len = nl ? (int)(nl - line) : (int)strlen(line);
		unsigned long lo, hi;
		char c;
		if (sscanf(line, "%lx-%lx%c", &lo, &hi, &c) == 3 && c == ' ')
			in = a >= lo && a < hi;
		else if (in && strncmp(line, "Locked:", 7) == 0)
			snprintf(locked, lcap, "%.*s", len - 7, line + 7);
		else if (in && strncmp(line, "VmFlags:", 8) == 0)
			snprintf(flags, fcap, "%.*s", len - 8, line + 8);
		if (!nl)
			break;
		line = nl + 1;
	}
}

static void vmlck(char *dst, size_t cap)
{
	snprintf(dst, cap, "(none)");
	if (read_file("/proc/self/status", status, sizeof(status)) < 0)
		die("status");
	char *p = strstr(status, "VmLck:");
	if (p)
		snprintf(dst, cap, "%.*s", (int)strcspn(p + 6, "\n"), p + 6);
}

static void take(struct region *r, char *flags, char *locked, unsigned char *res)
{
	vma_of(r->addr, flags, sizeof(r->flags), locked, sizeof(r->locked));
	if (mincore(r->addr, r->len, res))
		die("mincore");
	for (size_t i = 0; i < r->len / PAGE; i++)
		res[i] &= 1;
}

static int has_flag(const char *flags, const char *want)
{
	char w[64];
	snprintf(w, sizeof(w), "%s", want);
	for (char *tok = strtok(w, " "); tok; tok = strtok(NULL, " ")) {
		char pat[8];
		snprintf(pat, sizeof(pat), " %s", tok);
		if (!strstr(flags, pat))
			return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[2] : "ranges";
	int all = strcmp(mode, "all") == 0;
	target_init(argc, argv);

	struct region *r = add("whole", anon(16 * PAGE, PROT_READ | PROT_WRITE), 16 * PAGE, "lo");
	fill_pattern(r->addr, r->len, 0x10);
	if (!all && mlock(r->addr, r->len))
		die("mlock");

	r = add("onfault", anon(16 * PAGE, PROT_READ | PROT_WRITE), 16 * PAGE, all ? "lo" : "lo lf");
	if (!all && syscall(SYS_mlock2, r->addr, r->len, MLOCK_ONFAULT))
		die("mlock2");
	fill_pattern(r->addr + 2 * PAGE, 4 * PAGE, 0x20); /* 4 of 16 pages in */
	r->sum_off = 2 * PAGE, r->sum_len = 4 * PAGE;

	char *split = anon(16 * PAGE, PROT_READ | PROT_WRITE);
	fill_pattern(split, 16 * PAGE, 0x30);
	if (!all && mlock(split + 6 * PAGE, 4 * PAGE))
		die("mlock middle");
	add("split-low", split, 6 * PAGE, all ? "lo" : "");
	add("split-mid", split + 6 * PAGE, 4 * PAGE, "lo");
	add("split-high", split + 10 * PAGE, 6 * PAGE, all ? "lo" : "");

	r = add("prot-none", anon(8 * PAGE, PROT_NONE), 8 * PAGE, "lo");
	/* The kernel locks it, then fails to fault in what cannot be read:
	 * ENOMEM, with the lock kept. */
	if (!all && mlock(r->addr, r->len) && errno != ENOMEM)
		die("mlock PROT_NONE");

	add("unlocked", anon(8 * PAGE, PROT_READ | PROT_WRITE), 8 * PAGE, all ? "lo" : "");
	fill_pattern(regions[n_regions - 1].addr, 8 * PAGE, 0x40);

	if (mlockall(all ? MCL_CURRENT | MCL_FUTURE : MCL_FUTURE | MCL_ONFAULT))
		die("mlockall");
	r = add("after-mlockall", anon(8 * PAGE, PROT_READ | PROT_WRITE), 8 * PAGE, all ? "lo" : "lo lf");
	fill_pattern(r->addr, 2 * PAGE, 0x50);
	r->sum_len = 2 * PAGE;

	if (read_file("/proc/self/smaps", smaps, sizeof(smaps)) < 0)
		die("smaps");
	for (int i = 0; i < n_regions; i++) {
		r = &regions[i];
		take(r, r->flags, r->locked, r->resident);
		if (strcmp(r->name, "prot-none"))
			r->sum = fnv1a_words(r->addr + r->sum_off, r->sum_len);
	}
	vmlck(vmlck_before, sizeof(vmlck_before));
	out("NOTE VmLck%s\n", vmlck_before);

	ready();
	wait_trigger(NULL);

	check_identity();
	vmlck(vmlck_after, sizeof(vmlck_after));
	if (read_file("/proc/self/smaps", smaps, sizeof(smaps)) < 0)
		die("smaps");
	for (int i = 0; i < n_regions; i++) {
		char name[128], flags[256], locked[64];
		unsigned char res[64];
		r = &regions[i];
		take(r, flags, locked, res);
		snprintf(name, sizeof(name), "vmflags-%s", r->name);
		check(name, strcmp(flags, r->flags) == 0 && has_flag(flags, r->want) &&
				    (r->want[0] || !strstr(flags, " lo")),
		      "VmFlags '%s', was '%s' (want '%s')", flags, r->flags, r->want);
		snprintf(name, sizeof(name), "smaps-locked-%s", r->name);
		check(name, strcmp(locked, r->locked) == 0, "Locked:%s, was%s", locked, r->locked);
		snprintf(name, sizeof(name), "mincore-%s", r->name);
		size_t diff = 0;
		for (size_t k = 0; k < r->len / PAGE; k++)
			diff += res[k] != r->resident[k];
		check(name, diff == 0, "%zu pages differ in residency", diff);
		if (strcmp(r->name, "prot-none")) {
			uint64_t h = fnv1a_words(r->addr + r->sum_off, r->sum_len);
			snprintf(name, sizeof(name), "checksum-%s", r->name);
			check(name, h == r->sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, r->sum);
		}
	}
	check("VmLck", strcmp(vmlck_after, vmlck_before) == 0, "VmLck%s, was%s", vmlck_after, vmlck_before);

	/* mlockall's MCL_FUTURE: a mapping made now is locked as before. */
	char *fresh = anon(4 * PAGE, PROT_READ | PROT_WRITE);
	if (read_file("/proc/self/smaps", smaps, sizeof(smaps)) < 0)
		die("smaps");
	char flags[256], locked[64];
	vma_of(fresh, flags, sizeof(flags), locked, sizeof(locked));
	unsigned char res[4];
	if (mincore(fresh, 4 * PAGE, res))
		die("mincore");
	const char *want = all ? "lo" : "lo lf";
	check("mcl-future-new-mapping", has_flag(flags, want) && (!all || !strstr(flags, " lf")),
	      "a mapping made after restore has VmFlags '%s' (want '%s')", flags, want);
	check("mcl-future-populated", (res[0] & 1) == (all ? 1 : 0), "first page resident %d, want %d", res[0] & 1, all);
	return finish();
}

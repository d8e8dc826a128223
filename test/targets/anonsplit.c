/*
 * anonsplit — adjacent private anonymous VMAs that look the same (same
 * protection, flags, advice) but that the kernel keeps apart, each with
 * an anon_vma of its own, as a JVM's committed regions are.
 *
 *   anonsplit TRIGGER
 *
 * Three 64 KiB regions, each mapped, written (or, the middle one, written
 * and dropped with MADV_DONTNEED: an anon_vma, no pages) on its own, then
 * moved with mremap next to each other: A | B | C. On the trigger
 * /proc/self/maps must still show three VMAs there, and A and C their
 * contents.
 */
#include "common.h"

#include <sys/mman.h>

enum { SZ = 64 << 10 };

static int vmas_in(uintptr_t lo, uintptr_t hi, char *desc, size_t cap)
{
	char buf[1 << 16];
	if (read_file("/proc/self/maps", buf, sizeof(buf)) < 0)
		return -1;
	int n = 0;
	desc[0] = 0;
	for (char *l = buf; *l;) {
		unsigned long s, e;
		if (sscanf(l, "%lx-%lx", &s, &e) == 2 && s >= lo && e <= hi) {
			n++;
			size_t k = strlen(desc);
			snprintf(desc + k, cap - k, "%lx-%lx ", s, e);
		}
		char *nl = strchr(l, '\n');
		if (!nl)
			break;
		l = nl + 1;
	}
	return n;
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	char *base = mmap(NULL, 3 * SZ, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		die("reserve");
	char *parts[3];
	for (int i = 0; i < 3; i++) {
		parts[i] = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (parts[i] == MAP_FAILED)
			die("mmap");
		fill_pattern(parts[i], SZ, 100 + i);
		if (i == 1 && madvise(parts[i], SZ, MADV_DONTNEED) < 0)
			die("madvise");
	}
	for (int i = 0; i < 3; i++)
		if (mremap(parts[i], SZ, SZ, MREMAP_MAYMOVE | MREMAP_FIXED, base + i * SZ) == MAP_FAILED)
			die("mremap");
	uint64_t sum0 = fnv1a(base, SZ), sum2 = fnv1a(base + 2 * SZ, SZ);
	char desc[512];
	int before = vmas_in((uintptr_t)base, (uintptr_t)base + 3 * SZ, desc, sizeof(desc));
	if (before != 3) {
		out("SETUP-ERROR the kernel merged the regions: %s\n", desc);
		return 2;
	}
	ready();
	wait_trigger(NULL);
	check_identity();
	int after = vmas_in((uintptr_t)base, (uintptr_t)base + 3 * SZ, desc, sizeof(desc));
	check("three-vmas", after == 3, "%d VMAs where there were 3: %s", after, desc);
	check("contents-a", fnv1a(base, SZ) == sum0, "A changed");
	check("contents-c", fnv1a(base + 2 * SZ, SZ) == sum2, "C changed");
	for (int i = 0; i < SZ; i += 4096)
		if (base[SZ + i] != 0) {
			check("b-empty", 0, "B has data at %d", i);
			break;
		}
	return finish();
}

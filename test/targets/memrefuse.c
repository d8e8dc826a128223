/*
 * memrefuse: holds one kind of memory that cryo cannot restore exactly, by
 * mode. `cryo dump` must refuse, naming the mapping and what it is, and leave
 * this process running and intact: after the trigger it checks its memory,
 * its counter and that the thing it held is still there.
 *
 *   memrefuse TRIGGER uffd|aio|uring|guard|ksm
 *
 * uffd: a range registered with userfaultfd (MISSING), the uffd kept open.
 * aio: an AIO ring (io_setup), its [aio] mapping.
 * uring: io_uring's rings mapped, the io_uring fd closed: only the mapping is
 * left. guard: guard pages (6.13). ksm: prctl(PR_SET_MEMORY_MERGE) (6.4;
 * the data region is reported).
 * Each prints "MAPPING <start>-<end>" for the mapping the dump must name, or
 * "SKIP <why>" where the kernel lacks it.
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <linux/io_uring.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define PAGE 4096UL
#define DATA (256 * PAGE)

static volatile uint64_t count;
static void work(void) { count++; }

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[2] : "";
	target_init(argc, argv);
	char *data = mmap(NULL, DATA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (data == MAP_FAILED)
		die("mmap");
	fill_pattern(data, DATA, 0x4e);
	uint64_t sum = fnv1a_words(data, DATA);
	void *lo = NULL;
	size_t len = 0;

	if (!strcmp(mode, "uffd")) {
		int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		if (fd < 0) {
			out("SKIP userfaultfd: %s\n", strerror(errno));
			return 0;
		}
		struct uffdio_api api = {.api = UFFD_API};
		if (ioctl(fd, UFFDIO_API, &api))
			die("UFFDIO_API");
		len = 16 * PAGE;
		lo = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct uffdio_register reg = {.range = {(uintptr_t)lo, len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
		if (lo == MAP_FAILED || ioctl(fd, UFFDIO_REGISTER, &reg))
			die("UFFDIO_REGISTER");
	} else if (!strcmp(mode, "aio")) {
		aio_context_t ctx = 0;
		if (syscall(SYS_io_setup, 8, &ctx)) {
			out("SKIP io_setup: %s\n", strerror(errno));
			return 0;
		}
		lo = (void *)ctx;
		/* The ring's length is the kernel's: found in maps below. */
	} else if (!strcmp(mode, "uring")) {
		struct io_uring_params p;
		memset(&p, 0, sizeof(p));
		int fd = (int)syscall(SYS_io_uring_setup, 4, &p);
		if (fd < 0) {
			out("SKIP io_uring_setup: %s\n", strerror(errno));
			return 0;
		}
		len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
		lo = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
		if (lo == MAP_FAILED)
			die("mmap io_uring");
		close(fd);
	} else if (!strcmp(mode, "ksm")) {
		if (prctl(67 /* PR_SET_MEMORY_MERGE */, 1, 0, 0, 0)) {
			out("SKIP PR_SET_MEMORY_MERGE: %s\n", strerror(errno));
			return 0;
		}
		lo = data;
	} else if (!strcmp(mode, "guard")) {
		len = 16 * PAGE;
		lo = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (lo == MAP_FAILED)
			die("mmap");
		memset(lo, 7, len);
		if (madvise((char *)lo + 4 * PAGE, 2 * PAGE, 102 /* MADV_GUARD_INSTALL */)) {
			out("SKIP MADV_GUARD_INSTALL: %s\n", strerror(errno));
			return 0;
		}
	} else {
		out("SETUP-ERROR unknown mode %s\n", mode);
		return 2;
	}

	/* Report the whole VMA that holds lo, as maps prints it. */
	static char maps[256 * 1024];
	if (read_file("/proc/self/maps", maps, sizeof(maps)) < 0)
		die("maps");
	unsigned long a, b;
	for (char *line = maps; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (sscanf(line, "%lx-%lx", &a, &b) == 2 && (uintptr_t)lo >= a && (uintptr_t)lo < b)
			out("MAPPING %lx-%lx\n", a, b);

	ready();
	wait_trigger(work);
	uint64_t now = fnv1a_words(data, DATA);
	check("data-intact", now == sum, "fnv %016" PRIx64 ", was %016" PRIx64, now, sum);
	check("counting", count > 0, "counter did not move");
	if (read_file("/proc/self/maps", maps, sizeof(maps)) < 0)
		die("maps");
	char want[64];
	snprintf(want, sizeof(want), "%lx-", (unsigned long)(uintptr_t)lo & ~(PAGE - 1));
	check("mapping-kept", strstr(maps, want) != NULL || !strcmp(mode, "aio"), "no mapping at %s", want);
	return finish();
}

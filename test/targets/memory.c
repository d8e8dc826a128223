/*
 * memory: every kind of mapping cryo must bring back, each with a checksum
 * taken before READY and compared after the trigger, plus the text of
 * /proc/self/maps and the VmFlags of every VMA in /proc/self/smaps.
 *
 *   memory TRIGGER [lite|criu]
 *
 * "lite" shrinks the big anonymous regions (used by the SIGKILL-mid-dump loop,
 * which starts hundreds of these). "criu" leaves out what only cryo's own
 * files record (an mseal'd region): the state an image in CRIU's layout alone
 * can hold.
 *
 * Nothing in the verify path may create or move a mapping before the maps are
 * compared: buffers are static, /proc files are read with read(2), and the
 * stack is grown once up front so that verifying does not grow it.
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/time.h>

#define PAGE 4096UL
#define MiB (1024UL * 1024UL)

struct region {
	const char *name;
	char *addr;
	size_t len;
	uint64_t sum;
	const char *flag; /* a VmFlags mnemonic the region must keep, or NULL */
	char vmflags[256];
};

static struct region regions[32];
static int n_regions;

static char maps_before[256 * 1024], maps_after[256 * 1024];
static char smaps_buf[2 * 1024 * 1024];
static char vmflags_before[64 * 1024], vmflags_after[64 * 1024];
static char norm_a[256 * 1024], norm_b[256 * 1024];
static char msg[1024];
static const unsigned char zero_page[PAGE];

static char *sparse;
static size_t sparse_len;
static uint64_t sparse_sum;
static void *heap_blocks[128];
static size_t heap_sizes[128];
static uint64_t heap_sum;
static char *sbrk_area;
static uint64_t sbrk_sum;
static void *brk_before;
static char *mprot;
static uint64_t mprot_sum;
static int memfd = -1;
static char shared_path[4096], private_path[4096];
static uint64_t private_file_sum;
static volatile uint64_t *work_page;
static volatile uint64_t work_iter;
static struct timespec mono_before, real_before;
#define MAP_DROPPABLE_ 0x08
static char *sealed;


static struct region *add_region(const char *name, void *addr, size_t len, const char *flag)
{
	struct region *r = &regions[n_regions++];
	r->name = name;
	r->addr = addr;
	r->len = len;
	r->flag = flag;
	return r;
}

static void *map(size_t len, int prot, int flags, int fd)
{
	void *p = mmap(NULL, len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void *anon(size_t len)
{
	return map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
}

/* grow_stack touches 1 MiB below the current frame once, so that [stack]
 * already covers everything the verify path will use. */
static void __attribute__((noinline)) grow_stack(void)
{
	volatile char buf[1024 * 1024];
	for (size_t i = 0; i < sizeof(buf); i += PAGE)
		buf[i] = 1;
	buf[sizeof(buf) - 1] = 1;
}

static uint64_t sparse_hash(void)
{
	uint64_t h = 0;
	for (size_t off = 0; off < sparse_len; off += 16 * PAGE)
		h = h * 31 + fnv1a_words(sparse + off, PAGE);
	return h;
}

static uint64_t heap_hash(void)
{
	uint64_t h = 0;
	for (int i = 0; i < 128; i++)
		h = h * 31 + fnv1a(heap_blocks[i], heap_sizes[i]);
	return h;
}

static uint64_t file_hash(const char *path, size_t len)
{
	static char buf[1024 * 1024];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = pread(fd, buf, len, 0);
	close(fd);
	if (n != (ssize_t)len)
		return 1;
	return fnv1a_words(buf, len);
}

static void write_file(const char *path, size_t len, uint64_t seed)
{
	static char buf[1024 * 1024];
	fill_pattern(buf, len, seed);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die(path);
	if (write(fd, buf, len) != (ssize_t)len)
		die("write");
	close(fd);
}

/* vmflags_digest keeps, for every VMA of smaps, its header line and its
 * VmFlags line: everything that must not change (the Rss/Pss counters may). */
static void vmflags_digest(char *dst, size_t cap)
{
	if (read_file("/proc/self/smaps", smaps_buf, sizeof(smaps_buf)) < 0)
		die("read smaps");
	size_t n = 0;
	for (char *line = smaps_buf; *line;) {
		char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line + 1) : strlen(line);
		/* A VMA's header line starts with its hex address range. */
		char *dash = memchr(line, '-', len);
		int header = dash && dash > line && strspn(line, "0123456789abcdef") == (size_t)(dash - line);
		if ((header || strncmp(line, "VmFlags:", 8) == 0) && n + len < cap) {
			memcpy(dst + n, line, len);
			n += len;
		}
		line += len;
	}
	dst[n] = 0;
}

/* vmflags_of copies the VmFlags of the VMA that contains addr. */
static void vmflags_of(const char *digest, void *addr, char *dst, size_t cap)
{
	uintptr_t a = (uintptr_t)addr;
	snprintf(dst, cap, "(no vma)");
	for (const char *line = digest; *line;) {
		const char *nl = strchr(line, '\n');
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi && nl &&
		    strncmp(nl + 1, "VmFlags:", 8) == 0) {
			const char *v = nl + 1 + 8, *e = strchr(v, '\n');
			snprintf(dst, cap, "%.*s", e ? (int)(e - v) : (int)strlen(v), v);
			return;
		}
		if (!nl)
			break;
		line = nl + 1;
	}
}

/* normalize_maps rewrites maps text with single spaces between fields and the
 * inode of shmem-backed mappings (memfd, shared anonymous memory) blanked: the
 * kernel numbers a new shmem inode on restore and nothing can choose it. Every
 * other byte must be identical. */
static void normalize_maps(const char *src, char *dst, size_t cap)
{
	size_t n = 0;
	for (const char *line = src; *line;) {
		const char *nl = strchr(line, '\n');
		int len = nl ? (int)(nl - line) : (int)strlen(line);
		char range[64], perms[8], off[32], dev[32], path[4096] = "";
		unsigned long ino;
		int consumed = 0;
		char tmp[4096 + 256];
		snprintf(tmp, sizeof(tmp), "%.*s", len, line);
		if (sscanf(tmp, "%63s %7s %31s %31s %lu %n", range, perms, off, dev, &ino, &consumed) >= 5) {
			snprintf(path, sizeof(path), "%s", tmp + consumed);
			int shm = strncmp(path, "/dev/zero (deleted)", 19) == 0 ||
				  strncmp(path, "/memfd:", 7) == 0 || strncmp(path, "/SYSV", 5) == 0;
			int w = snprintf(dst + n, cap - n, "%s %s %s %s %lu %s\n", range, perms, off, dev,
					 shm ? 0UL : ino, path);
			if (w > 0 && (size_t)w < cap - n)
				n += (size_t)w;
		} else {
			/* Not a mapping line (smaps' VmFlags:): kept as it is. */
			int w = snprintf(dst + n, cap - n, "%s\n", tmp);
			if (w > 0 && (size_t)w < cap - n)
				n += (size_t)w;
		}
		if (!nl)
			break;
		line = nl + 1;
	}
	dst[n] = 0;
}


/* mm_identity is what the kernel reports of the mm: the exe link and its
 * inode, cmdline, environ, auxv (raw bytes), and the stat fields that are mm
 * bounds (26-28: start_code, end_code, start_stack; 45-51: start_data ..
 * env_end). All must come back identical. */
struct mm_identity {
	char exe[4096];
	ino_t exe_ino;
	char cmdline[4096], environ_[16384], auxv[1024];
	ssize_t cmdline_len, environ_len, auxv_len;
	unsigned long long stat_fields[10];
};

static void read_mm_identity(struct mm_identity *m)
{
	memset(m, 0, sizeof(*m));
	ssize_t n = readlink("/proc/self/exe", m->exe, sizeof(m->exe) - 1);
	if (n > 0)
		m->exe[n] = 0;
	struct stat st;
	if (stat("/proc/self/exe", &st) == 0)
		m->exe_ino = st.st_ino;
	m->cmdline_len = read_file("/proc/self/cmdline", m->cmdline, sizeof(m->cmdline));
	m->environ_len = read_file("/proc/self/environ", m->environ_, sizeof(m->environ_));
	m->auxv_len = read_file("/proc/self/auxv", m->auxv, sizeof(m->auxv));
	char stat_buf[2048];
	if (read_file("/proc/self/stat", stat_buf, sizeof(stat_buf)) <= 0)
		return;
	char *p = strrchr(stat_buf, ')');
	static const int want[10] = {26, 27, 28, 45, 46, 47, 48, 49, 50, 51};
	int field = 2, k = 0;
	for (char *tok = strtok(p + 1, " "); tok && k < 10; tok = strtok(NULL, " ")) {
		field++;
		if (field == want[k])
			m->stat_fields[k++] = strtoull(tok, NULL, 10);
	}
}

static struct mm_identity mm_before, mm_after;

static void work(void)
{
	/* Keep a page changing while the test checkpoints: every word holds the
	 * iteration number once an iteration completes. */
	uint64_t it = work_iter + 1;
	for (size_t i = 0; i < PAGE / 8; i++)
		work_page[i] = it;
	work_iter = it;
}

int main(int argc, char **argv)
{
	int lite = argc > 2 && strcmp(argv[2], "lite") == 0;
	int criu = argc > 2 && strcmp(argv[2], "criu") == 0;
	unsigned char stackbuf[256 * 1024];
	uint64_t stack_sum;

	target_init(argc, argv);
	grow_stack();

	/* Sparse anonymous region: only every 16th page is ever touched. */
	sparse_len = (lite ? 16 : 64) * MiB;
	sparse = anon(sparse_len);
	for (size_t off = 0; off < sparse_len; off += 16 * PAGE)
		fill_pattern(sparse + off, PAGE, 0x5eed0000 + off);
	sparse_sum = sparse_hash();

	/* Dense anonymous region. */
	size_t dense_len = (lite ? 32 : 8) * MiB;
	struct region *r = add_region("dense-anon", anon(dense_len), dense_len, NULL);
	fill_pattern(r->addr, r->len, 0xd0);

	/* Heap: malloc'd blocks of many sizes (brk and mmap'd), then sbrk growth. */
	uint64_t s = 0x4ea9;
	for (int i = 0; i < 128; i++) {
		heap_sizes[i] = i == 127 ? 300 * 1024 : 16 + xorshift64(&s) % 4096;
		heap_blocks[i] = malloc(heap_sizes[i]);
		if (!heap_blocks[i])
			die("malloc");
		fill_pattern(heap_blocks[i], heap_sizes[i] & ~7UL, i + 1);
		memset((char *)heap_blocks[i] + (heap_sizes[i] & ~7UL), 0x7c, heap_sizes[i] & 7);
	}
	heap_sum = heap_hash();
	sbrk_area = sbrk(1 * MiB);
	if (sbrk_area == (void *)-1)
		die("sbrk");
	fill_pattern(sbrk_area, 1 * MiB, 0x5b);
	sbrk_sum = fnv1a_words(sbrk_area, 1 * MiB);
	brk_before = sbrk(0);

	/* A big array on the stack. */
	fill_pattern(stackbuf, sizeof(stackbuf), 0x57ac);
	stack_sum = fnv1a_words(stackbuf, sizeof(stackbuf));

	/* Private file mapping, some pages then written (copy-on-write). */
	snprintf(private_path, sizeof(private_path), "%s/mem-private.dat", work_dir);
	write_file(private_path, 1 * MiB, 0xf11e);
	private_file_sum = file_hash(private_path, 1 * MiB);
	int fd = open(private_path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("open private");
	r = add_region("file-private", map(1 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd), 1 * MiB, NULL);
	close(fd);
	fill_pattern(r->addr + 3 * PAGE, PAGE, 3);
	fill_pattern(r->addr + 7 * PAGE, 2 * PAGE, 7);
	fill_pattern(r->addr + 100 * PAGE, PAGE, 100);

	/* Shared file mapping, written through the mapping. */
	snprintf(shared_path, sizeof(shared_path), "%s/mem-shared.dat", work_dir);
	write_file(shared_path, 512 * 1024, 0x5a);
	fd = open(shared_path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("open shared");
	r = add_region("file-shared", map(512 * 1024, PROT_READ | PROT_WRITE, MAP_SHARED, fd), 512 * 1024, NULL);
	close(fd);
	fill_pattern(r->addr + 5 * PAGE, 3 * PAGE, 55);
	if (msync(r->addr, r->len, MS_SYNC))
		die("msync");

	/* Shared anonymous memory. */
	r = add_region("shared-anon", map(1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1),
		       1 * MiB, NULL);
	fill_pattern(r->addr, r->len, 0x5a0);

	/* memfd, mapped shared, fd kept open. */
	memfd = memfd_create("cryo-test", MFD_CLOEXEC);
	if (memfd < 0 || ftruncate(memfd, 1 * MiB))
		die("memfd");
	r = add_region("memfd", map(1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, memfd), 1 * MiB, NULL);
	fill_pattern(r->addr, r->len, 0x3fd);

	/* Two read-write regions with PROT_NONE guard pages around them. */
	char *guarded = map(36 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	if (mprotect(guarded + PAGE, 16 * PAGE, PROT_READ | PROT_WRITE) ||
	    mprotect(guarded + 18 * PAGE, 16 * PAGE, PROT_READ | PROT_WRITE))
		die("mprotect guard");
	r = add_region("guarded-1", guarded + PAGE, 16 * PAGE, NULL);
	fill_pattern(r->addr, r->len, 0x91);
	r = add_region("guarded-2", guarded + 18 * PAGE, 16 * PAGE, NULL);
	fill_pattern(r->addr, r->len, 0x92);

	/* A MAP_GROWSDOWN region. */
	r = add_region("growsdown",
		       map(16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1),
		       16 * PAGE, "gd");
	fill_pattern(r->addr, r->len, 0x6d);

	/* One region per madvise flag that shows in VmFlags. */
	static const struct {
		const char *name;
		int advice;
		const char *flag;
	} adv[] = {
		{"madv-hugepage", MADV_HUGEPAGE, "hg"},     {"madv-nohugepage", MADV_NOHUGEPAGE, "nh"},
		{"madv-dontfork", MADV_DONTFORK, "dc"},     {"madv-dontdump", MADV_DONTDUMP, "dd"},
		{"madv-wipeonfork", MADV_WIPEONFORK, "wf"}, {"madv-random", MADV_RANDOM, "rr"},
		{"madv-sequential", MADV_SEQUENTIAL, "sr"},
	};
	for (size_t i = 0; i < sizeof(adv) / sizeof(adv[0]); i++) {
		size_t len = adv[i].advice == MADV_HUGEPAGE ? 4 * MiB : 64 * 1024;
		char *p = anon(len);
		const char *flag = adv[i].flag;
		if (madvise(p, len, adv[i].advice)) {
			out("NOTE madvise %s: %s (flag not checked)\n", adv[i].name, strerror(errno));
			flag = NULL;
		}
		r = add_region(adv[i].name, p, len, flag);
		fill_pattern(p, len, 0xadu + i);
	}

	/* KSM's MADV_MERGEABLE, where the kernel has KSM. */
	{
		char *p = anon(64 * 1024);
		const char *flag = "mg";
		if (madvise(p, 64 * 1024, MADV_MERGEABLE)) {
			out("NOTE madvise MADV_MERGEABLE: %s (flag not checked)\n", strerror(errno));
			flag = NULL;
		}
		add_region("madv-mergeable", p, 64 * 1024, flag);
		fill_pattern(p, 64 * 1024, 0x3e6);
	}

	/* MAP_DROPPABLE (6.11): "dp", with "wf dd nr" that come with it. */
	{
		void *p = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_DROPPABLE_ | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			out("NOTE MAP_DROPPABLE: %s (not checked)\n", strerror(errno));
		} else {
			add_region("droppable", p, 64 * 1024, "dp");
			fill_pattern(p, 64 * 1024, 0xd7);
		}
	}

	/* A sealed region (mseal, 6.10): "sl", and munmap refused. */
	sealed = criu ? NULL : anon(4 * PAGE);
	if (sealed)
		fill_pattern(sealed, 4 * PAGE, 0x5e);
	if (!sealed) {
		out("NOTE mseal: left out in criu mode\n");
	} else if (syscall(462 /* mseal */, sealed, 4 * PAGE, 0)) {
		out("NOTE mseal: %s (not checked)\n", strerror(errno));
		sealed = NULL;
	} else {
		add_region("sealed", sealed, 4 * PAGE, "sl");
	}

	/* A region with mprotect'ed sub-ranges: r, r-x, and one no-access page
	 * whose contents must survive too. */
	mprot = anon(16 * PAGE);
	fill_pattern(mprot, 16 * PAGE, 0x3e);
	mprot_sum = fnv1a_words(mprot, 16 * PAGE);
	if (mprotect(mprot + 4 * PAGE, 4 * PAGE, PROT_READ) ||
	    mprotect(mprot + 10 * PAGE, 2 * PAGE, PROT_READ | PROT_EXEC) ||
	    mprotect(mprot + 13 * PAGE, PAGE, PROT_NONE))
		die("mprotect sub-ranges");

	work_page = anon(PAGE);
	work();

	for (int i = 0; i < n_regions; i++)
		regions[i].sum = fnv1a_words(regions[i].addr, regions[i].len);

	clock_gettime(CLOCK_MONOTONIC, &mono_before);
	clock_gettime(CLOCK_REALTIME, &real_before);
	vmflags_digest(vmflags_before, sizeof(vmflags_before));
	for (int i = 0; i < n_regions; i++)
		vmflags_of(vmflags_before, regions[i].addr, regions[i].vmflags, sizeof(regions[i].vmflags));
	if (read_file("/proc/self/maps", maps_before, sizeof(maps_before)) < 0)
		die("read maps");
	read_mm_identity(&mm_before);

	ready();
	wait_trigger(work);

	/* First what reading memory could disturb: the maps and VmFlags. */
	if (read_file("/proc/self/maps", maps_after, sizeof(maps_after)) < 0)
		die("read maps");
	vmflags_digest(vmflags_after, sizeof(vmflags_after));
	check_identity();
	normalize_maps(maps_before, norm_a, sizeof(norm_a));
	normalize_maps(maps_after, norm_b, sizeof(norm_b));
	first_diff_line(norm_a, norm_b, msg, sizeof(msg));
	check("maps-identical", strcmp(norm_a, norm_b) == 0, "%s", msg);
	normalize_maps(vmflags_before, norm_a, sizeof(norm_a));
	normalize_maps(vmflags_after, norm_b, sizeof(norm_b));
	first_diff_line(norm_a, norm_b, msg, sizeof(msg));
	check("smaps-vmflags-identical", strcmp(norm_a, norm_b) == 0, "%s", msg);
	check("brk", sbrk(0) == brk_before, "sbrk(0) %p, was %p", sbrk(0), brk_before);
	read_mm_identity(&mm_after);
	check("exe", strcmp(mm_before.exe, mm_after.exe) == 0 && mm_before.exe_ino == mm_after.exe_ino,
	      "exe %s (inode %lu), was %s (inode %lu)", mm_after.exe, (unsigned long)mm_after.exe_ino, mm_before.exe,
	      (unsigned long)mm_before.exe_ino);
	check("cmdline", mm_before.cmdline_len > 0 && mm_before.cmdline_len == mm_after.cmdline_len &&
			     !memcmp(mm_before.cmdline, mm_after.cmdline, mm_before.cmdline_len),
	      "cmdline differs (%zd bytes, was %zd)", mm_after.cmdline_len, mm_before.cmdline_len);
	check("environ", mm_before.environ_len == mm_after.environ_len &&
			     !memcmp(mm_before.environ_, mm_after.environ_, mm_before.environ_len),
	      "environ differs (%zd bytes, was %zd)", mm_after.environ_len, mm_before.environ_len);
	check("auxv", mm_before.auxv_len > 0 && mm_before.auxv_len == mm_after.auxv_len &&
			  !memcmp(mm_before.auxv, mm_after.auxv, mm_before.auxv_len),
	      "auxv differs (%zd bytes, was %zd)", mm_after.auxv_len, mm_before.auxv_len);
	int same = 1, bad = -1;
	for (int i = 0; i < 10; i++)
		if (mm_before.stat_fields[i] != mm_after.stat_fields[i] && bad < 0)
			bad = i, same = 0;
	check("stat-mm-fields", same && mm_before.stat_fields[0] != 0, "stat mm field #%d: %llu, was %llu", bad,
	      bad >= 0 ? mm_after.stat_fields[bad] : 0, bad >= 0 ? mm_before.stat_fields[bad] : 0);

	for (int i = 0; i < n_regions; i++) {
		char name[128], now[256];
		struct region *g = &regions[i];
		uint64_t h = fnv1a_words(g->addr, g->len);
		snprintf(name, sizeof(name), "checksum-%s", g->name);
		check(name, h == g->sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, g->sum);
		vmflags_of(vmflags_after, g->addr, now, sizeof(now));
		snprintf(name, sizeof(name), "vmflags-%s", g->name);
		check(name, strcmp(now, g->vmflags) == 0 && (!g->flag || strstr(now, g->flag)),
		      "VmFlags '%s', was '%s' (want %s)", now, g->vmflags, g->flag ? g->flag : "-");
	}

	if (sealed) {
		int rc = munmap(sealed, 4 * PAGE);
		check("sealed-munmap-refused", rc == -1 && errno == EPERM, "munmap of the sealed region: %d (%s)", rc,
		      rc ? strerror(errno) : "unmapped");
	}

	uint64_t h = sparse_hash();
	check("checksum-sparse-touched", h == sparse_sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, sparse_sum);
	size_t nonzero = 0;
	for (size_t off = 0; off < sparse_len; off += PAGE)
		if ((off / PAGE) % 16 && memcmp(sparse + off, zero_page, PAGE))
			nonzero++;
	check("sparse-untouched-zero", nonzero == 0, "%zu untouched pages are not zero", nonzero);

	h = heap_hash();
	check("checksum-malloc", h == heap_sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, heap_sum);
	h = fnv1a_words(sbrk_area, 1 * MiB);
	check("checksum-sbrk", h == sbrk_sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, sbrk_sum);
	h = fnv1a_words(stackbuf, sizeof(stackbuf));
	check("checksum-stack", h == stack_sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, stack_sum);

	h = file_hash(private_path, 1 * MiB);
	check("private-file-unchanged", h == private_file_sum, "file fnv %016" PRIx64 ", was %016" PRIx64, h,
	      private_file_sum);
	struct region *sh = &regions[2];
	h = file_hash(shared_path, sh->len);
	check("shared-file-content", h == sh->sum, "read() fnv %016" PRIx64 ", mapping was %016" PRIx64, h,
	      sh->sum);
	static char mbuf[1 * MiB];
	ssize_t n = pread(memfd, mbuf, sizeof(mbuf), 0);
	h = n == (ssize_t)sizeof(mbuf) ? fnv1a_words(mbuf, sizeof(mbuf)) : 0;
	check("memfd-read", h == regions[4].sum, "pread %zd bytes, fnv %016" PRIx64 ", was %016" PRIx64, n,
	      h, regions[4].sum);

	if (mprotect(mprot + 13 * PAGE, PAGE, PROT_READ))
		die("mprotect");
	h = fnv1a_words(mprot, 16 * PAGE);
	check("checksum-mprotect-subranges", h == mprot_sum, "fnv %016" PRIx64 ", was %016" PRIx64, h,
	      mprot_sum);

	size_t torn = 0;
	for (size_t i = 0; i < PAGE / 8; i++)
		torn += work_page[i] != work_iter;
	check("work-page-consistent", torn == 0, "%zu words differ from iteration %" PRIu64, torn, work_iter);

	/* The vdso must still work and agree with the kernel's own clocks. */
	struct timespec mono, real, mono_sys;
	struct timeval tv, tv_sys;
	clock_gettime(CLOCK_MONOTONIC, &mono);
	clock_gettime(CLOCK_REALTIME, &real);
	gettimeofday(&tv, NULL);
	syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &mono_sys);
	syscall(SYS_gettimeofday, &tv_sys, NULL);
	double dm = (mono_sys.tv_sec - mono.tv_sec) + (mono_sys.tv_nsec - mono.tv_nsec) / 1e9;
	double dt = (tv_sys.tv_sec - tv.tv_sec) + (tv_sys.tv_usec - tv.tv_usec) / 1e6;
	check("vdso-clock_gettime", mono.tv_sec > mono_before.tv_sec ||
					    (mono.tv_sec == mono_before.tv_sec && mono.tv_nsec >= mono_before.tv_nsec),
	      "monotonic went back: %ld.%09ld < %ld.%09ld", (long)mono.tv_sec, mono.tv_nsec,
	      (long)mono_before.tv_sec, mono_before.tv_nsec);
	check("vdso-agrees-with-syscall", dm >= 0 && dm < 1.0 && dt > -0.001 && dt < 1.0,
	      "syscall-vdso: monotonic %.6f s, gettimeofday %.6f s", dm, dt);
	check("realtime-forward", real.tv_sec >= real_before.tv_sec, "realtime %ld < %ld", (long)real.tv_sec,
	      (long)real_before.tv_sec);

	void *p = malloc(100000);
	check("malloc-after", p != NULL, "malloc failed");
	free(p);
	unlink(private_path);
	unlink(shared_path);
	return finish();
}

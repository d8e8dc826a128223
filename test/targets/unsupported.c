/*
 * unsupported: holds a file descriptor of a kind cryo cannot dump (an io_uring
 * instance; a netlink socket where io_uring is disabled) at fd 5. `cryo dump`
 * must refuse, naming fd 5 and its link, and leave this process running and
 * intact: after the trigger it checks its memory, its counter and the fd.
 */
#include "common.h"

#include <linux/io_uring.h>
#include <linux/netlink.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define FD_ODD 5
#define LEN (4UL * 1024 * 1024)

static volatile uint64_t count;
static uint64_t count_at_ready;

static void work(void) { count++; }

int main(int argc, char **argv)
{
	char link[256], now[256];
	struct stat st_before, st;
	target_init(argc, argv);

	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	int fd = (int)syscall(SYS_io_uring_setup, 4, &p);
	if (fd < 0)
		fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		die("io_uring_setup and netlink socket");
	if (fd != FD_ODD && (dup2(fd, FD_ODD) < 0 || close(fd)))
		die("dup2");
	ssize_t n = readlink("/proc/self/fd/5", link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	fstat(FD_ODD, &st_before);

	char *mem = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		die("mmap");
	fill_pattern(mem, LEN, 0x0dd);
	uint64_t sum = fnv1a_words(mem, LEN);

	out("UNSUPPORTED fd=%d link=%s\n", FD_ODD, link);
	count_at_ready = count;
	ready();
	wait_trigger(work);

	check_identity();
	check("counter", count > count_at_ready, "count %" PRIu64 ", was %" PRIu64 " at READY", count,
	      count_at_ready);
	uint64_t h = fnv1a_words(mem, LEN);
	check("checksum", h == sum, "fnv %016" PRIx64 ", was %016" PRIx64, h, sum);
	n = readlink("/proc/self/fd/5", now, sizeof(now) - 1);
	now[n > 0 ? n : 0] = 0;
	check("fd5-link", !strcmp(now, link), "%s, was %s", now, link);
	check("fd5-same-file", !fstat(FD_ODD, &st) && st.st_ino == st_before.st_ino && st.st_dev == st_before.st_dev,
	      "inode %lu, was %lu", (unsigned long)st.st_ino, (unsigned long)st_before.st_ino);
	return finish();
}

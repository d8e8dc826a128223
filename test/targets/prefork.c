/*
 * prefork — a pre-forked server: the master fills a large private region,
 * then forks workers that share it copy-on-write, an epoll set watching a
 * pipe, and a shared anonymous counter. Each worker also dirties one private
 * page of the region. After restore every worker checks the region (its own
 * page and the master's), its ids, the shared counter and the epoll set; the
 * master collects the results.
 *
 * Usage: prefork TRIGGER [MiB [WORKERS]]
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define MAXW 64

struct shared {
	volatile uint64_t counter;
	volatile int go;
	volatile int done;   /* the master has its answer: workers may exit */
	volatile pid_t server; /* the worker that answered the waiting client */
	volatile pid_t pid[MAXW];
	volatile int result[MAXW]; /* 0 pending, 1 pass, 2 fail */
	char detail[MAXW][160];
};

static struct shared *sh;
static unsigned char *region;
static size_t region_len;
static uint64_t region_sum;
static int ep, pipefd[2], listener;

/* region_hash hashes the region with worker w's page taken as its pattern. */
static uint64_t page_seed(int w) { return 0xabc000 + (uint64_t)w; }

static void worker(int w)
{
	pid_t pid = getpid(), ppid = getppid();
	size_t page = (size_t)(w + 1) * 4096 * 16; /* one private page per worker */
	fill_pattern(region + page, 4096, page_seed(w));
	uint64_t mine = fnv1a_words(region + page, 4096);
	sh->pid[w] = pid;
	while (!sh->go) {
		__atomic_add_fetch(&sh->counter, 1, __ATOMIC_SEQ_CST);
		struct epoll_event ev;
		epoll_wait(ep, &ev, 1, 0);
		msleep(5);
	}
	char why[160] = "";
	int ok = 1;
	if (getpid() != pid || getppid() != ppid) {
		snprintf(why, sizeof(why), "pid/ppid %d/%d, were %d/%d", getpid(), getppid(), pid, ppid);
		ok = 0;
	} else if (fnv1a_words(region + page, 4096) != mine) {
		snprintf(why, sizeof(why), "its private page changed");
		ok = 0;
	} else {
		/* The rest of the region is the master's: check it page by page,
		 * skipping this worker's own page. */
		unsigned char save[4096];
		memcpy(save, region + page, 4096);
		fill_pattern(region + page, 4096, 0x5eed + page);
		if (fnv1a_words(region, region_len) != region_sum) {
			snprintf(why, sizeof(why), "the shared region changed");
			ok = 0;
		}
		memcpy(region + page, save, 4096);
	}
	if (ok) {
		/* The epoll set is the master's: the pipe's read end is watched
		 * and has data, so it must report it. */
		struct epoll_event ev;
		int n = epoll_wait(ep, &ev, 1, 100);
		if (n != 1 || ev.data.u64 != 0x7777) {
			snprintf(why, sizeof(why), "epoll_wait gave %d event(s), data %#llx", n,
				 (unsigned long long)ev.data.u64);
			ok = 0;
		}
	}
	snprintf(sh->detail[w], sizeof(sh->detail[w]), "%s", why);
	sh->result[w] = ok ? 1 : 2;
	/* Serve the shared listening socket: the connection that waited in its
	 * backlog across the checkpoint is accepted by one of the workers. */
	while (!sh->done) {
		int c = accept(listener, NULL, NULL);
		if (c >= 0) {
			char req[16] = "";
			if (read(c, req, sizeof(req) - 1) > 0 && strcmp(req, "ping") == 0) {
				sh->server = getpid();
				if (write(c, "pong", 4) != 4)
					sh->server = -1;
			}
			close(c);
		}
		msleep(1);
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
	int workers = argc > 3 ? atoi(argv[3]) : 10;
	if (workers > MAXW)
		workers = MAXW;
	region_len = mib << 20;
	region = mmap(NULL, region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED || sh == MAP_FAILED)
		die("mmap");
	/* The region as the master filled it; each worker's page is replaced by
	 * this same pattern when the worker hashes the shared part. */
	fill_pattern(region, region_len, 0x5eed);
	for (int w = 0; w < workers; w++) {
		size_t page = (size_t)(w + 1) * 4096 * 16;
		fill_pattern(region + page, 4096, 0x5eed + page);
	}
	region_sum = fnv1a_words(region, region_len);

	if (pipe(pipefd) < 0 || write(pipefd[1], "x", 1) != 1)
		die("pipe");
	ep = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0x7777};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &ev) < 0)
		die("epoll");

	/* The listening socket the workers share, and a client connection that
	 * waits in its backlog (nobody accepts before the trigger). */
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (snprintf(addr.sun_path, sizeof(addr.sun_path), "%.90s/prefork.sock", work_dir) >= (int)sizeof(addr.sun_path))
		die("socket path too long");
	unlink(addr.sun_path);
	listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(listener, 16) < 0)
		die("listen");
	int client = socket(AF_UNIX, SOCK_STREAM, 0);
	if (client < 0 || connect(client, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("connect");

	for (int w = 0; w < workers; w++)
		if (fork() == 0)
			worker(w);
	for (int i = 0; i < 5000; i++) {
		int all = 1;
		for (int w = 0; w < workers; w++)
			all &= sh->pid[w] != 0;
		if (all)
			break;
		msleep(1);
	}
	uint64_t before = sh->counter;
	ready();
	wait_trigger(NULL);

	check_identity();
	check("counter-continues", sh->counter > before, "shared counter %" PRIu64 ", was %" PRIu64,
	      (uint64_t)sh->counter, before);
	check("region", fnv1a_words(region, region_len) == region_sum, "the master's region changed");
	sh->go = 1;
	for (int i = 0; i < 10000; i++) {
		int done = 1;
		for (int w = 0; w < workers; w++)
			done &= sh->result[w] != 0;
		if (done)
			break;
		msleep(1);
	}
	for (int w = 0; w < workers; w++) {
		char name[32];
		snprintf(name, sizeof(name), "worker-%d", w);
		check(name, sh->result[w] == 1, "%s", sh->result[w] == 0 ? "no result" : sh->detail[w]);
	}
	/* The client that waited in the backlog: a worker accepts it now. */
	char reply[8] = "";
	struct timeval tv = {.tv_sec = 5};
	setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int sent = write(client, "ping", 4) == 4;
	int got = read(client, reply, 4);
	check("backlog-served", sent && got == 4 && memcmp(reply, "pong", 4) == 0 && sh->server > 0,
	      "sent %d, read %d (%.4s), server %d", sent, got, reply, sh->server);
	sh->done = 1;
	while (wait(NULL) > 0)
		;
	return finish();
}

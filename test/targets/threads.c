/*
 * threads: eight threads caught in different states — spinning in user
 * space, holding values in vector registers, and blocked in nanosleep, read,
 * a futex (pthread_cond_wait) and poll. After the trigger each must still be
 * the same task (tid, TLS, fs base), still make progress, and its blocking
 * call must complete the way the program expects.
 */
#include "common.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <asm/prctl.h>

enum { SPIN0, SPIN1, SLEEPY, VECTOR, SLEEPER, READER, CONDWAIT, POLLER, NTHREADS };
static const char *names[NTHREADS] = {"spin0", "spin1", "sleepy", "vector", "sleeper", "reader", "condwait", "poller"};

struct thr {
	pthread_t pt;
	pid_t tid;
	unsigned long fsbase;
	volatile uint64_t count;
	volatile uint64_t eintr;
	/* Filled in by the thread as it exits. */
	pid_t tid_end;
	uint64_t tls_end;
	unsigned long fsbase_end;
	int result; /* blocked threads: what their call returned (byte, flag) */
	char err[256];
};

static struct thr th[NTHREADS];
static __thread uint64_t tls_val;
static volatile int stop;
static int read_pipe[2], poll_pipe[2];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int cond_flag;
static pthread_barrier_t started;
static uint64_t at_ready[NTHREADS], last_seen[NTHREADS];
static char tasks_before[4096], tasks_after[4096];

static uint8_t vec_pat[16][32] __attribute__((aligned(32)));
static uint8_t vec_out[16][32] __attribute__((aligned(32)));
static uint64_t gpr_out[6];
static uint32_t mxcsr_out;
static uint16_t fpucw_out;
static int have_avx;

static void on_usr2(int sig) { (void)sig; }

static void enter(int i)
{
	th[i].tid = sys_gettid();
	tls_val = 0xC0DE0000ULL + (uint64_t)i * 0x1111;
	syscall(SYS_arch_prctl, ARCH_GET_FS, &th[i].fsbase);
	pthread_barrier_wait(&started);
}

static void leave(int i)
{
	th[i].tls_end = tls_val;
	syscall(SYS_arch_prctl, ARCH_GET_FS, &th[i].fsbase_end);
	th[i].tid_end = sys_gettid();
}

static void *spinner(void *arg)
{
	int i = (int)(intptr_t)arg;
	enter(i);
	while (!stop) {
		th[i].count++;
		if ((th[i].count & 0xfffff) == 0)
			sched_yield();
	}
	leave(i);
	return NULL;
}

static void *sleepy(void *arg)
{
	int i = (int)(intptr_t)arg;
	enter(i);
	while (!stop) {
		struct timespec ts = {0, 1000000};
		if (nanosleep(&ts, NULL) && errno == EINTR)
			th[i].eintr++;
		th[i].count++;
	}
	leave(i);
	return NULL;
}

static void *vector(void *arg)
{
	int i = (int)(intptr_t)arg;
	enter(i);
	/* Non-default rounding modes in MXCSR and the x87 control word. */
	uint32_t mxcsr = 0x1f80 | (3 << 13);
	uint16_t cw = 0x037f | (3 << 10);
	asm volatile("ldmxcsr %0\n\tfldcw %1" ::"m"(mxcsr), "m"(cw));
	/* Everything from the loads to the stores runs without a call or a
	 * syscall, so the registers hold the pattern across the checkpoint
	 * only if cryo saved and restored them. */
	if (have_avx) {
		asm volatile("vmovdqu 0(%[p]), %%ymm0\n\tvmovdqu 32(%[p]), %%ymm1\n\t"
			     "vmovdqu 64(%[p]), %%ymm2\n\tvmovdqu 96(%[p]), %%ymm3\n\t"
			     "vmovdqu 128(%[p]), %%ymm4\n\tvmovdqu 160(%[p]), %%ymm5\n\t"
			     "vmovdqu 192(%[p]), %%ymm6\n\tvmovdqu 224(%[p]), %%ymm7\n\t"
			     "vmovdqu 256(%[p]), %%ymm8\n\tvmovdqu 288(%[p]), %%ymm9\n\t"
			     "vmovdqu 320(%[p]), %%ymm10\n\tvmovdqu 352(%[p]), %%ymm11\n\t"
			     "vmovdqu 384(%[p]), %%ymm12\n\tvmovdqu 416(%[p]), %%ymm13\n\t"
			     "vmovdqu 448(%[p]), %%ymm14\n\tvmovdqu 480(%[p]), %%ymm15\n\t"
			     "movabs $0x1111111111111111, %%r10\n\tmovabs $0x2222222222222222, %%r11\n\t"
			     "movabs $0x3333333333333333, %%r12\n\tmovabs $0x4444444444444444, %%r13\n\t"
			     "movabs $0x5555555555555555, %%r14\n\tmovabs $0x6666666666666666, %%r15\n\t"
			     "1: pause\n\tincq (%[cnt])\n\tcmpl $0, (%[stop])\n\tje 1b\n\t"
			     "vmovdqu %%ymm0, 0(%[o])\n\tvmovdqu %%ymm1, 32(%[o])\n\t"
			     "vmovdqu %%ymm2, 64(%[o])\n\tvmovdqu %%ymm3, 96(%[o])\n\t"
			     "vmovdqu %%ymm4, 128(%[o])\n\tvmovdqu %%ymm5, 160(%[o])\n\t"
			     "vmovdqu %%ymm6, 192(%[o])\n\tvmovdqu %%ymm7, 224(%[o])\n\t"
			     "vmovdqu %%ymm8, 256(%[o])\n\tvmovdqu %%ymm9, 288(%[o])\n\t"
			     "vmovdqu %%ymm10, 320(%[o])\n\tvmovdqu %%ymm11, 352(%[o])\n\t"
			     "vmovdqu %%ymm12, 384(%[o])\n\tvmovdqu %%ymm13, 416(%[o])\n\t"
			     "vmovdqu %%ymm14, 448(%[o])\n\tvmovdqu %%ymm15, 480(%[o])\n\t"
			     "mov %%r10, 0(%[g])\n\tmov %%r11, 8(%[g])\n\tmov %%r12, 16(%[g])\n\t"
			     "mov %%r13, 24(%[g])\n\tmov %%r14, 32(%[g])\n\tmov %%r15, 40(%[g])\n\t"
			     "vzeroupper"
			     :
			     : [p] "r"(vec_pat), [o] "r"(vec_out), [g] "r"(gpr_out), [cnt] "r"(&th[i].count),
			       [stop] "r"(&stop)
			     : "memory", "cc", "r10", "r11", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2",
			       "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
			       "xmm13", "xmm14", "xmm15");
	} else {
		asm volatile("movdqu 0(%[p]), %%xmm0\n\tmovdqu 32(%[p]), %%xmm1\n\t"
			     "movdqu 64(%[p]), %%xmm2\n\tmovdqu 96(%[p]), %%xmm3\n\t"
			     "movdqu 128(%[p]), %%xmm4\n\tmovdqu 160(%[p]), %%xmm5\n\t"
			     "movdqu 192(%[p]), %%xmm6\n\tmovdqu 224(%[p]), %%xmm7\n\t"
			     "movdqu 256(%[p]), %%xmm8\n\tmovdqu 288(%[p]), %%xmm9\n\t"
			     "movdqu 320(%[p]), %%xmm10\n\tmovdqu 352(%[p]), %%xmm11\n\t"
			     "movdqu 384(%[p]), %%xmm12\n\tmovdqu 416(%[p]), %%xmm13\n\t"
			     "movdqu 448(%[p]), %%xmm14\n\tmovdqu 480(%[p]), %%xmm15\n\t"
			     "movabs $0x1111111111111111, %%r10\n\tmovabs $0x2222222222222222, %%r11\n\t"
			     "movabs $0x3333333333333333, %%r12\n\tmovabs $0x4444444444444444, %%r13\n\t"
			     "movabs $0x5555555555555555, %%r14\n\tmovabs $0x6666666666666666, %%r15\n\t"
			     "1: pause\n\tincq (%[cnt])\n\tcmpl $0, (%[stop])\n\tje 1b\n\t"
			     "movdqu %%xmm0, 0(%[o])\n\tmovdqu %%xmm1, 32(%[o])\n\t"
			     "movdqu %%xmm2, 64(%[o])\n\tmovdqu %%xmm3, 96(%[o])\n\t"
			     "movdqu %%xmm4, 128(%[o])\n\tmovdqu %%xmm5, 160(%[o])\n\t"
			     "movdqu %%xmm6, 192(%[o])\n\tmovdqu %%xmm7, 224(%[o])\n\t"
			     "movdqu %%xmm8, 256(%[o])\n\tmovdqu %%xmm9, 288(%[o])\n\t"
			     "movdqu %%xmm10, 320(%[o])\n\tmovdqu %%xmm11, 352(%[o])\n\t"
			     "movdqu %%xmm12, 384(%[o])\n\tmovdqu %%xmm13, 416(%[o])\n\t"
			     "movdqu %%xmm14, 448(%[o])\n\tmovdqu %%xmm15, 480(%[o])\n\t"
			     "mov %%r10, 0(%[g])\n\tmov %%r11, 8(%[g])\n\tmov %%r12, 16(%[g])\n\t"
			     "mov %%r13, 24(%[g])\n\tmov %%r14, 32(%[g])\n\tmov %%r15, 40(%[g])"
			     :
			     : [p] "r"(vec_pat), [o] "r"(vec_out), [g] "r"(gpr_out), [cnt] "r"(&th[i].count),
			       [stop] "r"(&stop)
			     : "memory", "cc", "r10", "r11", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2",
			       "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
			       "xmm13", "xmm14", "xmm15");
	}
	asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr_out), "=m"(fpucw_out));
	mxcsr = 0x1f80;
	cw = 0x037f;
	asm volatile("ldmxcsr %0\n\tfldcw %1" ::"m"(mxcsr), "m"(cw));
	leave(i);
	return NULL;
}

static void *sleeper(void *arg)
{
	int i = (int)(intptr_t)arg;
	enter(i);
	for (;;) {
		struct timespec ts = {10, 0};
		if (nanosleep(&ts, NULL) == 0) {
			th[i].count++;
			continue;
		}
		if (errno != EINTR) {
			snprintf(th[i].err, sizeof(th[i].err), "nanosleep: %s", strerror(errno));
			break;
		}
		if (stop) {
			th[i].result = 1;
			break;
		}
		th[i].eintr++;
	}
	leave(i);
	return NULL;
}

static void *reader(void *arg)
{
	int i = (int)(intptr_t)arg;
	char c;
	enter(i);
	for (;;) {
		ssize_t n = read(read_pipe[0], &c, 1);
		if (n == 1) {
			th[i].result = c;
			break;
		}
		if (n < 0 && errno == EINTR) {
			th[i].eintr++;
			continue;
		}
		snprintf(th[i].err, sizeof(th[i].err), "read returned %zd: %s", n, n < 0 ? strerror(errno) : "EOF");
		break;
	}
	leave(i);
	return NULL;
}

static void *condwait(void *arg)
{
	int i = (int)(intptr_t)arg;
	enter(i);
	pthread_mutex_lock(&mu);
	while (!cond_flag) {
		pthread_cond_wait(&cv, &mu);
		th[i].count++;
	}
	th[i].result = cond_flag;
	pthread_mutex_unlock(&mu);
	leave(i);
	return NULL;
}

static void *poller(void *arg)
{
	int i = (int)(intptr_t)arg;
	enter(i);
	for (;;) {
		struct pollfd p = {poll_pipe[0], POLLIN, 0};
		int n = poll(&p, 1, 100);
		if (n == 0) {
			th[i].count++;
			continue;
		}
		if (n < 0 && errno == EINTR) {
			th[i].eintr++;
			continue;
		}
		char c = 0;
		if (n == 1 && (p.revents & POLLIN) && read(poll_pipe[0], &c, 1) == 1) {
			th[i].result = c;
		} else {
			snprintf(th[i].err, sizeof(th[i].err), "poll returned %d revents %#x: %s", n, p.revents,
				 n < 0 ? strerror(errno) : "");
		}
		break;
	}
	leave(i);
	return NULL;
}

static void list_tasks(char *dst, size_t cap)
{
	int tids[256], n = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	while (d && (e = readdir(d)) && n < 256)
		if (e->d_name[0] != '.')
			tids[n++] = atoi(e->d_name);
	if (d)
		closedir(d);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && tids[j - 1] > tids[j]; j--) {
			int t = tids[j];
			tids[j] = tids[j - 1];
			tids[j - 1] = t;
		}
	size_t off = 0;
	dst[0] = 0;
	for (int i = 0; i < n && off < cap - 16; i++)
		off += (size_t)snprintf(dst + off, cap - off, "%d ", tids[i]);
}

static void observe(void)
{
	for (int i = 0; i < NTHREADS; i++)
		last_seen[i] = th[i].count;
}

int main(int argc, char **argv)
{
	static void *(*fns[NTHREADS])(void *) = {spinner, spinner, sleepy, vector,
						  sleeper, reader,  condwait, poller};
	target_init(argc, argv);
	__builtin_cpu_init();
	have_avx = __builtin_cpu_supports("avx");
	out("NOTE vector registers: %s\n", have_avx ? "ymm0-15 (AVX)" : "xmm0-15 (SSE)");
	fill_pattern(vec_pat, sizeof(vec_pat), 0x7ec);

	struct sigaction sa = {.sa_handler = on_usr2};
	sigaction(SIGUSR2, &sa, NULL);
	if (pipe(read_pipe) || pipe(poll_pipe))
		die("pipe");
	pthread_barrier_init(&started, NULL, NTHREADS + 1);
	for (int i = 0; i < NTHREADS; i++)
		if (pthread_create(&th[i].pt, NULL, fns[i], (void *)(intptr_t)i))
			die("pthread_create");
	pthread_barrier_wait(&started);
	tls_val = 0xAAAA;
	msleep(50);
	for (int i = 0; i < NTHREADS; i++) {
		report_tid(names[i], th[i].tid);
		at_ready[i] = th[i].count;
	}
	list_tasks(tasks_before, sizeof(tasks_before));
	ready();
	wait_trigger(observe);

	check_identity();
	list_tasks(tasks_after, sizeof(tasks_after));
	check("task-list", strcmp(tasks_before, tasks_after) == 0, "tasks '%s', were '%s'", tasks_after,
	      tasks_before);
	check("main-tls", tls_val == 0xAAAA, "tls %#" PRIx64, tls_val);

	/* Every counting thread must still count, from where it was. */
	uint64_t c1[NTHREADS], c2[NTHREADS];
	for (int i = 0; i < NTHREADS; i++)
		c1[i] = th[i].count;
	msleep(350);
	for (int i = 0; i < NTHREADS; i++)
		c2[i] = th[i].count;
	int counting[] = {SPIN0, SPIN1, SLEEPY, VECTOR, POLLER};
	for (size_t k = 0; k < sizeof(counting) / sizeof(counting[0]); k++) {
		int i = counting[k];
		char name[64];
		snprintf(name, sizeof(name), "counter-%s", names[i]);
		check(name, c1[i] >= last_seen[i] && c1[i] >= at_ready[i] && c2[i] > c1[i],
		      "at READY %" PRIu64 ", last seen %" PRIu64 ", now %" PRIu64 " then %" PRIu64, at_ready[i],
		      last_seen[i], c1[i], c2[i]);
	}

	/* Release everyone. */
	stop = 1;
	/* Signal until the sleeper has left: one kill could land between two
	 * nanosleep calls. */
	for (int k = 0; k < 100 && !th[SLEEPER].tid_end; k++) {
		pthread_kill(th[SLEEPER].pt, SIGUSR2);
		msleep(20);
	}
	if (write(read_pipe[1], "X", 1) != 1 || write(poll_pipe[1], "P", 1) != 1)
		die("write pipe");
	pthread_mutex_lock(&mu);
	cond_flag = 7;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);

	for (int i = 0; i < NTHREADS; i++) {
		char name[64];
		struct timespec dl;
		clock_gettime(CLOCK_REALTIME, &dl);
		dl.tv_sec += 5;
		int err = pthread_timedjoin_np(th[i].pt, NULL, &dl);
		snprintf(name, sizeof(name), "join-%s", names[i]);
		if (!check(name, err == 0, "pthread_timedjoin_np: %s", strerror(err)))
			continue;
		snprintf(name, sizeof(name), "tid-%s", names[i]);
		check(name, th[i].tid_end == th[i].tid, "gettid %d, was %d", th[i].tid_end, th[i].tid);
		snprintf(name, sizeof(name), "tls-%s", names[i]);
		check(name, th[i].tls_end == 0xC0DE0000ULL + (uint64_t)i * 0x1111, "tls %#" PRIx64, th[i].tls_end);
		snprintf(name, sizeof(name), "fsbase-%s", names[i]);
		check(name, th[i].fsbase_end == th[i].fsbase, "fs base %#lx, was %#lx", th[i].fsbase_end,
		      th[i].fsbase);
		if (th[i].eintr)
			out("NOTE %s saw EINTR %" PRIu64 " times\n", names[i], th[i].eintr);
	}
	check("sleeper-interrupted", th[SLEEPER].result == 1 && !th[SLEEPER].err[0], "result %d %s",
	      th[SLEEPER].result, th[SLEEPER].err);
	check("reader-got-byte", th[READER].result == 'X', "result %d %s", th[READER].result, th[READER].err);
	check("condwait-woke", th[CONDWAIT].result == 7, "result %d", th[CONDWAIT].result);
	check("poller-got-byte", th[POLLER].result == 'P', "result %d %s", th[POLLER].result, th[POLLER].err);

	int bad = -1;
	for (int r = 0; r < 16 && bad < 0; r++)
		if (memcmp(vec_out[r], vec_pat[r], have_avx ? 32 : 16))
			bad = r;
	check("vector-registers", bad < 0, "%cmm%d lost its value", have_avx ? 'y' : 'x', bad);
	int gbad = -1;
	for (int r = 0; r < 6 && gbad < 0; r++)
		if (gpr_out[r] != 0x1111111111111111ULL * (uint64_t)(r + 1))
			gbad = r;
	check("general-registers", gbad < 0, "r%d = %#" PRIx64, gbad + 10, gbad >= 0 ? gpr_out[gbad] : 0);
	check("mxcsr", mxcsr_out == (0x1f80 | (3 << 13)), "mxcsr %#x", mxcsr_out);
	check("x87-control-word", fpucw_out == (0x037f | (3 << 10)), "cw %#x", fpucw_out);
	return finish();
}

/*
 * spawn: run a command and report its wall time and peak RSS.
 *
 *   spawn REPORT CMD [ARGS...]
 *
 * forks, execs CMD, waits for it with wait4 and writes
 * "wall_ns=N maxrss_kib=N status=N" to the file REPORT, then exits with
 * CMD's exit status (128+signal if it was killed).
 *
 * Why not let the Go bench wait for cryo itself: at execve the kernel seeds
 * the new program's ru_maxrss with the high-water RSS of the address space
 * being replaced, and Go starts children with vfork, whose address space is
 * the parent's. cryo's ru_maxrss would then be at least the bench's own peak
 * (its baseline buffers). Forked from this small program, it is cryo's own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: spawn REPORT CMD [ARGS...]\n");
		return 2;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		perror("spawn: fork");
		return 2;
	}
	if (pid == 0) {
		execv(argv[2], argv + 2);
		perror("spawn: exec");
		_exit(127);
	}
	int status;
	struct rusage ru;
	if (wait4(pid, &status, 0, &ru) != pid) {
		perror("spawn: wait4");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	FILE *f = fopen(argv[1], "w");
	if (!f) {
		perror("spawn: report");
		return 2;
	}
	fprintf(f, "wall_ns=%lld maxrss_kib=%ld status=%d\n", ns, ru.ru_maxrss, status);
	fclose(f);
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}

/* fanout N MIB: a root and N-1 children, each with MIB MiB of its own
 * touched private memory; prints READY once all have touched theirs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = atoi(argv[1]);
	size_t len = (size_t)atoi(argv[2]) << 20;
	volatile int *ready = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	for (int i = 1; i < n; i++) {
		if (fork() == 0) {
			char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			memset(p, i, len);
			__atomic_add_fetch(ready, 1, __ATOMIC_SEQ_CST);
			for (;;)
				pause();
		}
	}
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(p, 0x55, len);
	while (*ready < n - 1)
		usleep(1000);
	printf("READY\n");
	fflush(stdout);
	for (;;)
		pause();
}

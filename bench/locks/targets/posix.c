/* posix N: hold N POSIX locks on one file, none adjacent (bytes 0, 2, 4...,
 * read and write in turn), print READY, wait. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 2 ? atoi(argv[2]) : 0;
	int fd = open(argv[1], O_RDWR | O_CREAT, 0644);
	if (fd < 0)
		return 2;
	for (int i = 0; i < n; i++) {
		struct flock fl = {.l_type = i % 2 ? F_WRLCK : F_RDLCK, .l_whence = SEEK_SET, .l_start = 2 * i, .l_len = 1};
		if (fcntl(fd, F_SETLK, &fl) < 0)
			return 3;
	}
	printf("READY %d\n", n);
	fflush(stdout);
	for (;;)
		pause();
}

/*
 * conns: N established loopback TCP connections, both ends in this
 * process (2N sockets), each end with 100 unread bytes its peer wrote.
 * Prints READY and waits. Usage: conns N
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 0;
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 128) || getsockname(l, (struct sockaddr *)&a, &len)) {
		perror("listen");
		return 1;
	}
	char msg[100];
	memset(msg, 'x', sizeof(msg));
	for (int i = 0; i < n; i++) {
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a))) {
			perror("connect");
			return 1;
		}
		int s = accept(l, NULL, NULL);
		if (s < 0 || write(c, msg, sizeof(msg)) != sizeof(msg) || write(s, msg, sizeof(msg)) != sizeof(msg)) {
			perror("accept/write");
			return 1;
		}
	}
	printf("READY %d\n", n);
	fflush(stdout);
	for (;;)
		pause();
}

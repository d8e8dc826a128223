/*
 * sysv — holds a System V shared memory segment, which cryo does not
 * checkpoint yet: the dump must refuse, naming it, and leave this process
 * exactly as it was (checked on the trigger).
 */
#include "common.h"

#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv)
{
	target_init(argc, argv);
	int id = shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600);
	if (id < 0)
		die("shmget");
	unsigned char *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		die("shmat");
	shmctl(id, IPC_RMID, NULL); /* gone once detached: nothing to leak */
	fill_pattern(p, 1 << 20, 0x5151);
	uint64_t sum = fnv1a_words(p, 1 << 20);
	ready();
	wait_trigger(NULL);
	check_identity();
	check("segment", fnv1a_words(p, 1 << 20) == sum, "contents changed");
	return finish();
}

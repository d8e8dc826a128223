/*
 * sysv — holds System V shared memory segments and proves after restore
 * that each is the same object: same id (found again by its key), key,
 * mode, owner, size, contents, attachment count, and that its two
 * attachments (one read-write, one SHM_RDONLY) still share memory.
 *
 *   sysv          a keyed segment attached twice and a removed (IPC_RMID)
 *                 one; both must come back
 *   sysv shared   one keyed segment, whose key the test attaches from
 *                 outside the tree: the dump must refuse it
 *   sysv sem      also a semaphore set it did a SEM_UNDO semop on, and
 *   sysv msg      also a message queue holding a message: both refused
 *                 (not dumped yet), and the objects are as they were
 */
#include "common.h"

#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#define SEG (1 << 20)
#define PRIV (3 * 4096 + 100)

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	int shared = strcmp(mode, "shared") == 0 || strcmp(mode, "sem") == 0 || strcmp(mode, "msg") == 0;
	key_t key = (key_t)(0x43520000 | (getpid() & 0xffff));
	int id = shmget(key, SEG, IPC_CREAT | IPC_EXCL | 0640);
	if (id < 0)
		die("shmget");
	unsigned char *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		die("shmat");
	out("SHMKEY %d %d\n", key, id);
	fill_pattern(p, SEG, 0x5151);
	const unsigned char *ro = shmat(id, NULL, SHM_RDONLY);
	if (ro == (void *)-1)
		die("shmat ro");

	int pid_ = -1;
	unsigned char *q = NULL;
	if (!shared) {
		pid_ = shmget(IPC_PRIVATE, PRIV, IPC_CREAT | 0600);
		if (pid_ < 0)
			die("shmget private");
		q = shmat(pid_, NULL, 0);
		if (q == (void *)-1)
			die("shmat private");
		shmctl(pid_, IPC_RMID, NULL); /* gone once detached */
		fill_pattern(q, PRIV, 0x77);
	}
	int semid = -1, msqid = -1;
	if (strcmp(mode, "sem") == 0) {
		semid = semget(IPC_PRIVATE, 2, IPC_CREAT | 0600);
		struct sembuf op = {.sem_num = 1, .sem_op = 3, .sem_flg = SEM_UNDO};
		if (semid < 0 || semop(semid, &op, 1) < 0)
			die("semget/semop");
		out("SEMID %d\n", semid);
	}
	struct {
		long type;
		char text[8];
	} msg = {7, "cryo"};
	if (strcmp(mode, "msg") == 0) {
		msqid = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
		if (msqid < 0 || msgsnd(msqid, &msg, sizeof msg.text, 0) < 0)
			die("msgget/msgsnd");
		out("MSQID %d\n", msqid);
	}
	uint64_t sum = fnv1a_words(p, SEG);
	uint64_t qsum = q ? fnv1a(q, PRIV) : 0;
	struct shmid_ds before, pbefore;
	if (shmctl(id, IPC_STAT, &before) < 0)
		die("IPC_STAT");
	if (q && shmctl(pid_, IPC_STAT, &pbefore) < 0)
		die("IPC_STAT private");
	ready();
	wait_trigger(NULL);
	check_identity();
	check("segment-contents", fnv1a_words(p, SEG) == sum, "contents changed");
	check("segment-ro-view", fnv1a_words(ro, SEG) == sum, "read-only attachment differs");
	check("segment-by-key", shmget(key, 0, 0) == id, "shmget(key) gives %d, want %d", shmget(key, 0, 0), id);
	struct shmid_ds after;
	int ok = shmctl(id, IPC_STAT, &after) == 0;
	check("segment-stat", ok && after.shm_perm.__key == key && after.shm_perm.mode == before.shm_perm.mode &&
			      after.shm_perm.uid == before.shm_perm.uid && after.shm_perm.gid == before.shm_perm.gid &&
			      after.shm_perm.cuid == before.shm_perm.cuid && after.shm_perm.cgid == before.shm_perm.cgid &&
			      after.shm_segsz == before.shm_segsz && after.shm_nattch == before.shm_nattch,
	      "stat differs: key %#x/%#x mode %o/%o nattch %lu/%lu size %zu/%zu", after.shm_perm.__key, before.shm_perm.__key,
	      after.shm_perm.mode, before.shm_perm.mode, (unsigned long)after.shm_nattch, (unsigned long)before.shm_nattch,
	      after.shm_segsz, before.shm_segsz);
	p[12345] ^= 0xff;
	check("segment-shared", ro[12345] == p[12345], "write not seen through the other attachment");
	if (q) {
		check("private-contents", fnv1a(q, PRIV) == qsum, "contents changed");
		struct shmid_ds pa;
		ok = shmctl(pid_, IPC_STAT, &pa) == 0;
		check("private-stat", ok && pa.shm_perm.__key == IPC_PRIVATE && pa.shm_perm.mode == pbefore.shm_perm.mode &&
				      pa.shm_segsz == PRIV && pa.shm_nattch == 1,
		      "stat differs: ok %d key %#x mode %o/%o nattch %lu", ok, pa.shm_perm.__key, pa.shm_perm.mode,
		      pbefore.shm_perm.mode, (unsigned long)pa.shm_nattch);
	}
	if (semid >= 0) {
		check("sem-value", semctl(semid, 1, GETVAL) == 3, "value %d, want 3", semctl(semid, 1, GETVAL));
		semctl(semid, 0, IPC_RMID);
	}
	if (msqid >= 0) {
		memset(msg.text, 0, sizeof msg.text);
		ssize_t n = msgrcv(msqid, &msg, sizeof msg.text, 0, IPC_NOWAIT);
		check("msg", n == sizeof msg.text && msg.type == 7 && strcmp(msg.text, "cryo") == 0, "got %zd bytes type %ld", n, msg.type);
		msgctl(msqid, IPC_RMID, NULL);
	}
	shmdt(p);
	shmdt(ro);
	shmctl(id, IPC_RMID, NULL);
	return finish();
}

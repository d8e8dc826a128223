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
 *   sysv semmsg   also a keyed semaphore set of 3 (values 5 0 2, owner
 *                 changed) with a child blocked in semop on semaphore 1,
 *                 and a keyed message queue holding messages of several
 *                 types (one taken, qbytes lowered under what they take),
 *                 and a private queue no one used but a child blocked in
 *                 msgrcv on it.
 *                 After the trigger: same ids by key, owners, modes,
 *                 values, pids of the last semop, last sender and
 *                 receiver, qbytes, every message in order; a post wakes
 *                 the semop waiter and a message the msgrcv one
 *   sysv semshared  semmsg, whose semaphore set or keyed queue (which
 *   sysv msgshared  its msgrcv waiter then waits on) the test uses from
 *                 outside the tree: refused
 *   sysv semwait  semmsg, whose set the test waits on (for semaphore 0 to
 *                 be zero): refused
 *   sysv semundo  semmsg, after a SEM_UNDO semop of the parent's: refused
 *                 (its undo list cannot be read)
 */
#include "common.h"

#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

#define SEG (1 << 20)
#define PRIV (3 * 4096 + 100)

#define NSEMS 3
static const unsigned short semvals[NSEMS] = {5, 0, 2};
#define WAKE_TYPE 99

/* The messages queued, in order, after the parent took one of type 5. */
static const struct {
	long type;
	size_t len;
} msgs[] = {{3, 5}, {1, 300}, {7, 0}, {3, 5}};
#define NMSGS (sizeof msgs / sizeof msgs[0])
#define QBYTES 200

static void msg_text(size_t i, unsigned char *b)
{
	for (size_t k = 0; k < msgs[i].len; k++)
		b[k] = (unsigned char)(i * 37 + k * 11 + (k >> 3));
}

/* sem_waiter blocks in semop taking semaphore 1: the freeze interrupts it
 * (semop fails with EINTR after any stop, signal(7)), so it tries again. */
static void sem_waiter(int semid)
{
	struct sembuf op = {.sem_num = 1, .sem_op = -1, .sem_flg = 0};
	while (semop(semid, &op, 1) < 0)
		if (errno != EINTR)
			_exit(10);
	_exit(0);
}

/* msg_waiter blocks in msgrcv for WAKE_TYPE: msgrcv is restarted after a
 * stop, so any failure is one. */
static void msg_waiter(int msqid)
{
	struct {
		long type;
		char text[64];
	} m;
	ssize_t n = msgrcv(msqid, &m, sizeof m.text, WAKE_TYPE, 0);
	if (n < 0)
		_exit(errno == EINTR ? 11 : 12);
	_exit(n == 6 && m.type == WAKE_TYPE && memcmp(m.text, "wakeup", 6) == 0 ? 0 : 13);
}

/* in_syscall: pid stands in syscall nr (/proc/PID/syscall). */
static int in_syscall(pid_t pid, long nr)
{
	char path[64], buf[256];
	snprintf(path, sizeof path, "/proc/%d/syscall", pid);
	if (read_file(path, buf, sizeof buf) < 0)
		return 0;
	return strtol(buf, NULL, 10) == nr;
}

static int child_status(pid_t pid)
{
	int st;
	for (int i = 0; i < 1000; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (r < 0)
			return -1;
		msleep(10);
	}
	return -2; /* still blocked after 10 s */
}

int main(int argc, char **argv)
{
	target_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	int shared = strcmp(mode, "shared") == 0;
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
	int semmsg = strcmp(mode, "semmsg") == 0 || strcmp(mode, "semshared") == 0 || strcmp(mode, "msgshared") == 0 ||
		     strcmp(mode, "semwait") == 0 || strcmp(mode, "semundo") == 0;
	int outside = strcmp(mode, "semshared") == 0 || strcmp(mode, "msgshared") == 0; /* the test uses them too */
	int semid = -1, msqid = -1, waitq = -1;
	pid_t semkid = -1, msgkid = -1;
	key_t semkey = (key_t)(0x43530000 | (getpid() & 0xffff)), msgkey = (key_t)(0x434d0000 | (getpid() & 0xffff));
	struct semid_ds sembefore;
	struct msqid_ds msgbefore;
	int sempids[NSEMS];
	if (semmsg) {
		semid = semget(semkey, NSEMS, IPC_CREAT | IPC_EXCL | 0640);
		if (semid < 0 || semctl(semid, 0, SETALL, (union semun){.array = (unsigned short *)semvals}) < 0)
			die("semget/SETALL");
		struct semid_ds ds;
		if (semctl(semid, 0, IPC_STAT, (union semun){.buf = &ds}) < 0)
			die("sem IPC_STAT");
		ds.sem_perm.uid = 1234;
		ds.sem_perm.gid = 5678;
		ds.sem_perm.mode = 0664;
		if (semctl(semid, 0, IPC_SET, (union semun){.buf = &ds}) < 0)
			die("sem IPC_SET");
		if (strcmp(mode, "semundo") == 0) {
			struct sembuf undo[2] = {{0, 1, SEM_UNDO}, {0, -1, SEM_UNDO}};
			if (semop(semid, undo, 2) < 0)
				die("semop SEM_UNDO");
		}
		out("SEMKEY %d %d\n", semkey, semid);
		semkid = fork();
		if (semkid < 0)
			die("fork");
		if (semkid == 0)
			sem_waiter(semid);
		report_child("semwaiter", semkid);
		while (semctl(semid, 1, GETNCNT) != 1)
			msleep(2);
		if (semctl(semid, 0, IPC_STAT, (union semun){.buf = &sembefore}) < 0)
			die("sem IPC_STAT");
		for (int i = 0; i < NSEMS; i++)
			sempids[i] = semctl(semid, i, GETPID);

		msqid = msgget(msgkey, IPC_CREAT | IPC_EXCL | 0620);
		if (msqid < 0)
			die("msgget");
		struct {
			long type;
			unsigned char text[512];
		} m;
		for (size_t i = 0; i < NMSGS; i++) {
			m.type = msgs[i].type;
			msg_text(i, m.text);
			if (msgsnd(msqid, &m, msgs[i].len, 0) < 0)
				die("msgsnd");
			if (i == 1) { /* one more, taken again: the parent is the last receiver */
				m.type = 5;
				if (msgsnd(msqid, &m, 1, 0) < 0 || msgrcv(msqid, &m, sizeof m.text, 5, IPC_NOWAIT) != 1)
					die("msgsnd/msgrcv 5");
			}
		}
		struct msqid_ds q;
		if (msgctl(msqid, IPC_STAT, &q) < 0)
			die("msg IPC_STAT");
		if (strcmp(mode, "msgshared") != 0) /* else the test could not send */
			q.msg_qbytes = QBYTES;
		q.msg_perm.uid = 4321;
		q.msg_perm.gid = 8765;
		if (msgctl(msqid, IPC_SET, &q) < 0)
			die("msg IPC_SET");
		out("MSGKEY %d %d\n", msgkey, msqid);
		/* A queue no one sent to or received from: the tree's only by
		 * its waiter. */
		waitq = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
		if (waitq < 0)
			die("msgget private");
		out("MSGWAIT 0 %d\n", waitq);
		msgkid = fork();
		if (msgkid < 0)
			die("fork");
		if (msgkid == 0) /* msgshared: the waiter keeps the queue the tree's */
			msg_waiter(strcmp(mode, "msgshared") == 0 ? msqid : waitq);
		report_child("msgwaiter", msgkid);
		while (!in_syscall(msgkid, SYS_msgrcv))
			msleep(2);
		if (msgctl(msqid, IPC_STAT, &msgbefore) < 0)
			die("msg IPC_STAT");
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
				      pa.shm_segsz == PRIV && pa.shm_nattch == pbefore.shm_nattch,
		      "stat differs: ok %d key %#x mode %o/%o nattch %lu", ok, pa.shm_perm.__key, pa.shm_perm.mode,
		      pbefore.shm_perm.mode, (unsigned long)pa.shm_nattch);
	}
	if (semid >= 0) {
		check("sem-by-key", semget(semkey, 0, 0) == semid, "semget(key) gives %d, want %d", semget(semkey, 0, 0), semid);
		struct semid_ds a;
		ok = semctl(semid, 0, IPC_STAT, (union semun){.buf = &a}) == 0;
		check("sem-stat",
		      ok && a.sem_perm.__key == semkey && a.sem_perm.mode == sembefore.sem_perm.mode && a.sem_perm.uid == 1234 &&
			      a.sem_perm.gid == 5678 && a.sem_perm.cuid == sembefore.sem_perm.cuid &&
			      a.sem_perm.cgid == sembefore.sem_perm.cgid && a.sem_nsems == NSEMS,
		      "ok %d key %#x mode %o/%o uid %d gid %d nsems %lu", ok, a.sem_perm.__key, a.sem_perm.mode,
		      sembefore.sem_perm.mode, a.sem_perm.uid, a.sem_perm.gid, (unsigned long)a.sem_nsems);
		unsigned short v[NSEMS];
		ok = semctl(semid, 0, GETALL, (union semun){.array = v}) == 0;
		check("sem-values", ok && memcmp(v, semvals, sizeof v) == 0, "values %u %u %u", v[0], v[1], v[2]);
		if (!outside)
			for (int i = 0; i < NSEMS; i++)
				check("sem-pid", semctl(semid, i, GETPID) == sempids[i], "semaphore %d: last pid %d, want %d", i,
				      semctl(semid, i, GETPID), sempids[i]);
		/* The waiter, interrupted by the freeze, is back in semop. */
		int n = 0;
		while (semctl(semid, 1, GETNCNT) != 1 && n++ < 5000)
			msleep(2);
		check("sem-waiter-blocked", semctl(semid, 1, GETNCNT) == 1, "%d waiting", semctl(semid, 1, GETNCNT));
		struct sembuf post = {.sem_num = 1, .sem_op = 1};
		ok = semop(semid, &post, 1) == 0;
		int st = child_status(semkid);
		check("sem-waiter-woken", ok && st == 0, "post %d, waiter ended with %d", ok, st);
		ok = semctl(semid, 0, GETALL, (union semun){.array = v}) == 0;
		check("sem-values-after", ok && memcmp(v, semvals, sizeof v) == 0, "values %u %u %u", v[0], v[1], v[2]);
		semctl(semid, 0, IPC_RMID);
	}
	if (msqid >= 0) {
		check("msg-by-key", msgget(msgkey, 0) == msqid, "msgget(key) gives %d, want %d", msgget(msgkey, 0), msqid);
		struct msqid_ds a;
		ok = msgctl(msqid, IPC_STAT, &a) == 0;
		check("msg-stat",
		      ok && a.msg_perm.__key == msgkey && a.msg_perm.mode == msgbefore.msg_perm.mode && a.msg_perm.uid == 4321 &&
			      a.msg_perm.gid == 8765 && a.msg_perm.cuid == msgbefore.msg_perm.cuid &&
			      a.msg_perm.cgid == msgbefore.msg_perm.cgid && a.msg_qbytes == msgbefore.msg_qbytes &&
			      (strcmp(mode, "msgshared") == 0 || a.msg_qbytes == QBYTES) && a.msg_qnum == NMSGS &&
			      a.__msg_cbytes == msgbefore.__msg_cbytes,
		      "ok %d key %#x mode %o/%o uid %d gid %d qbytes %lu qnum %lu cbytes %lu/%lu", ok, a.msg_perm.__key,
		      a.msg_perm.mode, msgbefore.msg_perm.mode, a.msg_perm.uid, a.msg_perm.gid, (unsigned long)a.msg_qbytes,
		      (unsigned long)a.msg_qnum, (unsigned long)a.__msg_cbytes, (unsigned long)msgbefore.__msg_cbytes);
		if (!outside)
			check("msg-pids", ok && a.msg_lspid == msgbefore.msg_lspid && a.msg_lrpid == msgbefore.msg_lrpid,
			      "last sender %d/%d receiver %d/%d", a.msg_lspid, msgbefore.msg_lspid, a.msg_lrpid,
			      msgbefore.msg_lrpid);
		struct {
			long type;
			unsigned char text[512];
		} m;
		unsigned char want[512];
		for (size_t i = 0; i < NMSGS; i++) {
			ssize_t n = msgrcv(msqid, &m, sizeof m.text, 0, IPC_NOWAIT);
			msg_text(i, want);
			check("msg", n == (ssize_t)msgs[i].len && m.type == msgs[i].type && memcmp(m.text, want, msgs[i].len) == 0,
			      "message %zu: %zd bytes type %ld, want %zu type %ld", i, n, m.type, msgs[i].len, msgs[i].type);
		}
		struct msqid_ds w;
		ok = msgctl(waitq, IPC_STAT, &w) == 0;
		check("msg-waitq", ok && w.msg_qnum == 0 && w.msg_lspid == 0 && w.msg_lrpid == 0 && w.msg_perm.__key == IPC_PRIVATE,
		      "ok %d qnum %lu lspid %d lrpid %d", ok, (unsigned long)w.msg_qnum, w.msg_lspid, w.msg_lrpid);
		m.type = WAKE_TYPE;
		memcpy(m.text, "wakeup", 6);
		ok = msgsnd(strcmp(mode, "msgshared") == 0 ? msqid : waitq, &m, 6, IPC_NOWAIT) == 0;
		int st = child_status(msgkid);
		check("msg-waiter-woken", ok && st == 0, "send %d, waiter ended with %d", ok, st);
		msgctl(msqid, IPC_RMID, NULL);
		msgctl(waitq, IPC_RMID, NULL);
	}
	shmdt(p);
	shmdt(ro);
	shmctl(id, IPC_RMID, NULL);
	return finish();
}

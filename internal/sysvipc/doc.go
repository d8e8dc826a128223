// Package sysvipc checkpoints and restores the System V IPC objects a
// process tree uses — shared memory segments, semaphore sets, message
// queues — in the host's IPC namespace (cryo does not dump IPC
// namespaces; see below for what that changes).
//
// # Shared memory
//
// A segment is dumped when a process of the tree has it attached (a
// "/SYSVkkkkkkkk" mapping, whose inode number is the segment's id). The
// dump refuses, naming the segment (key, id):
//
//   - a segment attached also by a process outside the tree: its
//     shm_nattch (/proc/sysvipc/shm) is more than the tree's mappings of
//     it, and a restore would give the tree a copy the other process does
//     not see;
//   - an attachment that is not the whole segment (part of it unmapped,
//     or split by mprotect or madvise) — not done yet;
//   - a segment locked with SHM_LOCK, or of huge pages.
//
// Segments of the namespace that the tree does not attach are not the
// tree's: they are left out, as they stay where they are.
//
// A segment outlives its processes. A dump that kills the tree removes
// (IPC_RMID) the segments it wrote, as the end of the tree's IPC namespace
// would: the image holds them, and their key and id must be free for the
// restore. With --leave-running they stay, and a restore beside the
// original fails on the taken id, as it would on the taken pids.
//
// # Image
//
// The segments go in ipcns-shm-ID.img, CRIU's file for an IPC namespace's
// segments: for each one an ipc_shm_entry (key, uid, gid, cuid, cgid,
// mode, id, size; in_pagemaps false) followed by its size bytes of
// contents padded to 4 bytes, which is the layout CRIU's restore still
// reads. ID is 1 (cryo writes no IPC namespace ids); the file holds only
// the tree's segments, not a whole namespace, so CRIU would restore them
// only into a new IPC namespace, if asked to. mode is shm_perm.mode with
// its SHM_DEST bit: a segment already removed (IPC_RMID, shown with key 0)
// is made again and removed once every process has attached it.
// Each mapping's vma_entry has status VMA_AREA_SYSVIPC and shmid the
// segment's id, as CRIU writes it; its pages are not in the process's
// pagemap.
//
// # Restore
//
// Each segment is created by cryo (it is in the same IPC namespace) with
// its key, IPC_CREAT|IPC_EXCL, and its id: kernel.shm_next_id is written
// first (it needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN over the IPC
// namespace), the id read back, and a restore whose key or id is taken
// fails before anything of the tree exists. The shmget runs on a thread
// of its own that has taken the creator's uid and gid, so that cuid and
// cgid are the creator's; then the contents are written, owner and mode
// set (IPC_SET). Processes attach with shmat at their VMA's address, with
// SHM_RDONLY where the VMA may not be made writable (no "mw" in VmFlags)
// and SHM_EXEC where it is executable, then mprotect to the VMA's
// protection; a child forked with the segment attached inherits it.
//
// # Semaphores and message queues: which are the tree's
//
// Nothing ties a semaphore set or a message queue to a process the way a
// mapping ties a segment. What the kernel records is who used it last,
// and who waits on it now, so cryo counts as the tree's:
//
//   - a set on one of whose semaphores a process or zombie of the tree did
//     the last operation (semctl GETPID: a semop, SETVAL or SETALL, or an
//     undo applied at exit), or on which a thread of the tree stood in
//     semop or semtimedop when frozen (its orig_rax and first argument);
//   - a queue whose last sender or receiver (lspid, lrpid) is of the tree,
//     or on which a thread of the tree stood in msgsnd or msgrcv.
//
// The namespace's other sets and queues are not the tree's: they are not
// dumped and stay where they are, as segments the tree does not attach.
// That includes one the tree used before but that processes outside the
// tree used last and nothing of the tree waits on: a tree restored into
// this namespace finds it as it is by then, if it is still there, as it
// would a file; one restored on another machine does not find it.
// The dump refuses, naming the object (key, id):
//
//   - a set of the tree's whose semaphore was last operated on by a live
//     process outside the tree, or that a process outside the tree waits
//     on (GETNCNT, GETZCNT: the tree's own waiters left their semop when
//     frozen, so whoever still waits is not the tree's);
//   - a queue whose last sender or receiver is a live process outside the
//     tree;
//   - a queue holding messages when msgrcv(MSG_COPY), the only way to read
//     them without taking them, is missing (CONFIG_CHECKPOINT_RESTORE;
//     probe msg_copy);
//   - a thread of the tree with a semaphore undo list, once the tree has a
//     set (see Undo).
//
// A pid of a last operation that no process has now is a user that is
// gone, not a sharer; if the pid was reused, the dump refuses a set no
// one else uses. What this cannot see: a process outside the tree that
// used a set or queue earlier but did not do the last operation, and one
// blocked in msgsnd or msgrcv on a queue of the tree's (the kernel counts
// no queue waiters). The dump that kills the tree removes its sets and
// queues, as it does its segments; such a process then finds them gone
// (EIDRM, EINVAL), as at the end of the tree's IPC namespace.
//
// # Undo
//
// The adjustments of SEM_UNDO semops (semadj) cannot be read: no /proc
// file shows a task's undo list, no semctl returns it, and it is applied
// only when its last task exits. kcmp(KCMP_SYSVSEM) does tell whether a
// task has a list: cryo compares every thread of the tree with one of its
// own that dropped its list (unshare(CLONE_SYSVSEM)). A list is made by
// a SEM_UNDO semop and by every clone with CLONE_SYSVSEM, which every
// pthread_create and Go thread does, so an empty list cannot be told from
// one holding adjustments: a tree that has a set and a thread with a list,
// so also a multithreaded process, is refused. When the tree has no set,
// no thread is refused for its list. The gap: a SEM_UNDO adjustment on a
// set that is not the tree's by the rules above (the tree did a SEM_UNDO
// semop on it, and another process did the last operation on each of its
// semaphores since) is not seen. Killing the tree at dump applies it, as
// the process's exit would, and the restored process has none left to
// apply at its own exit. A restored process's threads share one list again
// (clone3 with CLONE_SYSVSEM), whatever they shared before; it only
// matters to SEM_UNDO semops made after the restore.
//
// # Semaphores and message queues: image and restore
//
// The sets go in ipcns-sem-1.img (an ipc_sem_entry: key, uid, gid, cuid,
// cgid, mode, id, nsems; then nsems values as u16, padded to 8 bytes), the
// queues in ipcns-msg-1.img (an ipc_msg_entry: the same desc, qbytes,
// qnum; then each message's ipc_msg, mtype and msize, followed by its
// msize bytes padded to 8), CRIU's layouts, which crit decodes. The pid of
// each semaphore's last operation and each queue's last sender and
// receiver, which CRIU's entries cannot hold, are in cryo-meta.json
// (sem_pids, msg_pids).
//
// Each set and queue is made in the sysv stage, by cryo, with its key,
// IPC_CREAT|IPC_EXCL and its id: kernel.sem_next_id or msg_next_id is
// written first (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN) and the id read
// back. A restore whose id or key is taken fails before anything of the
// tree exists, naming the object and what takes it ("the id is taken by
// semaphore set key ..."). As for segments, the get runs on a thread that
// has taken the creator's uid and gid, so cuid and cgid are the creator's;
// owner and mode are set with IPC_SET. Once the tree's processes exist,
// before any of them runs (stage sysv-last), the values and messages go
// in, each last operation done by the process that did it, injected: each
// semaphore's value is set with SETVAL by the process of its last
// operation, so that GETPID shows it again; a queue's last receiver sends
// itself an empty message of a type no message has and takes it back (in
// an empty queue it takes one its last sender sent), the messages are sent
// in order by cryo but the last, which its last sender sends (up to 64
// KiB; a larger one cryo sends). The dumped qbytes is set last, as it may
// be lower than what the messages take (raising it above kernel.msgmnb for
// the time of the sends needs CAP_SYS_RESOURCE). A last operation done by
// a process no longer there, or by a zombie of the tree, is done by cryo:
// GETPID, lspid or lrpid then show cryo's pid.
//
// A thread that was blocked in semop or semtimedop sees it fail with
// EINTR: the freeze stops it, and after a stop the kernel never restarts
// those calls (signal(7)), exactly as after SIGSTOP and SIGCONT, and so
// also with --leave-running; programs retry, and it waits again. A thread
// blocked in msgrcv or msgsnd is restarted (ERESTARTNOHAND) and waits
// again, unaware.
//
// Times are not reproduced: the kernel sets sem_otime, sem_ctime,
// msg_stime, msg_rtime and msg_ctime to the time of the calls that change
// them, and nothing sets them otherwise. After a restore ctime is the
// restore's; sem_otime is 0 (SETVAL is no semop); msg_stime and msg_rtime
// are the restore's where there was a last sender or receiver.
//
// What the kernel shows of a segment and cryo does not reproduce: its
// times (shm_atime, shm_dtime, shm_ctime) and its cpid and lpid, which
// record who last did what, as CRIU does not.
package sysvipc

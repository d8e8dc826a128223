// Package sysvipc checkpoints and restores the System V IPC objects a
// process tree uses, in the host's IPC namespace (cryo does not dump IPC
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
// # Semaphores and message queues
//
// Not dumped: a tree that used one is refused (CheckSemMsg). In the host's
// namespace nothing says which of them are the tree's, and nothing, unlike
// a segment's shm_nattch, says that no other process uses one, so neither
// removing one at dump nor restoring a copy could be known to be right;
// they belong with the dump of a whole IPC namespace.
//
// What the kernel shows and cryo does not reproduce: the segment's times
// (shm_atime, shm_dtime, shm_ctime) and its cpid and lpid, which record
// who last did what, as CRIU does not.
package sysvipc

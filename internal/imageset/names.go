package imageset

import "fmt"

// File is one image file: its name in the directory and the magic of the
// entries it holds (a go-criu magic name).
type File struct {
	Name  string
	Magic string
}

// The files of an image, by CRIU's names.
var (
	Inventory  = File{"inventory.img", "INVENTORY"}
	Pstree     = File{"pstree.img", "PSTREE"}
	Files      = File{"files.img", "FILES"}
	Seccomp    = File{"seccomp.img", "SECCOMP"}
	PipesData  = File{"pipes-data.img", "PIPES_DATA"}
	FifoData   = File{"fifo-data.img", "FIFO_DATA"}
	SkQueues   = File{"sk-queues.img", "SK_QUEUES"}
	MemfdInode = File{"memfd-inode.img", "MEMFD_INODE"}
	// TtyInfo holds a tty_info_entry per side of each terminal (pty.go
	// of package files), TtyData the bytes either side had not read.
	TtyInfo = File{"tty-info.img", "TTY_INFO"}
	TtyData = File{"tty-data.img", "TTY_DATA"}
	// FileLocks holds the tree's file locks (file_lock_entry), written
	// when the dump was asked to take them (--file-locks), even if none.
	FileLocks = File{"file-locks.img", "FILE_LOCKS"}
	// StatsDump has no .img suffix: CRIU writes it so, and crit and
	// Podman's --print-stats look for that name.
	StatsDump = File{"stats-dump", "STATS"}
	// StatsRestore is what a restore writes into the image directory, as
	// CRIU does, under CRIU's name.
	StatsRestore = File{"stats-restore", "STATS"}
)

// StateName is cryo's own record of what the kernel showed of the tree
// when it was dumped (package procstate), for `cryo restore --verify`.
// CRIU ignores it.
const StateName = "cryo-state.json"

// UDPQueuesName is cryo's own record of the datagrams UDP sockets had
// not read (package files, udp.go): CRIU has no image for them.
const UDPQueuesName = "cryo-udp-queues.json"

// StatsDumpOld is the name cryo wrote stats-dump under before it followed
// CRIU's; images that have it are still read.
const StatsDumpOld = "stats-dump.img"

// Core is the core image of thread tid (the leader's carries the task).
func Core(tid uint32) File { return File{fmt.Sprintf("core-%d.img", tid), "CORE"} }

// Mm is the address space of process pid.
func Mm(pid uint32) File { return File{fmt.Sprintf("mm-%d.img", pid), "MM"} }

// Pagemap lists which pages of process pid are in which pages file.
func Pagemap(pid uint32) File { return File{fmt.Sprintf("pagemap-%d.img", pid), "PAGEMAP"} }

// PagemapShmem is the pagemap of shared memory object shmid: its addresses
// are offsets in the object.
func PagemapShmem(shmid uint32) File {
	return File{fmt.Sprintf("pagemap-shmem-%d.img", shmid), "PAGEMAP"}
}

// Fdinfo is the fd table with id filesID (the core's ids.files_id).
func Fdinfo(filesID uint32) File { return File{fmt.Sprintf("fdinfo-%d.img", filesID), "FDINFO"} }

// Fs is the cwd, root and umask of process pid.
func Fs(pid uint32) File { return File{fmt.Sprintf("fs-%d.img", pid), "FS"} }

// IpcShm holds System V shared memory segments (ipc_shm_entry, each
// followed by its contents), under CRIU's name for IPC namespace nsID;
// cryo writes only the segments its tree attached (package sysvipc).
func IpcShm(nsID uint32) File { return File{fmt.Sprintf("ipcns-shm-%d.img", nsID), "IPCNS_SHM"} }

// IpcSem holds System V semaphore sets (ipc_sem_entry, each followed by
// its values, u16 each, padded to 8 bytes), as IpcShm the tree's only.
func IpcSem(nsID uint32) File { return File{fmt.Sprintf("ipcns-sem-%d.img", nsID), "IPCNS_SEM"} }

// IpcMsg holds System V message queues (ipc_msg_entry, each followed by
// qnum times an ipc_msg and its msize bytes padded to 8), the tree's only.
func IpcMsg(nsID uint32) File { return File{fmt.Sprintf("ipcns-msg-%d.img", nsID), "IPCNS_MSG"} }

// Ids holds the kernel objects and namespaces process pid uses, by id
// (task_kobj_ids_entry). CRIU's restore reads a process's ids from here
// only; the copy in its core is for cryo.
func Ids(pid uint32) File { return File{fmt.Sprintf("ids-%d.img", pid), "IDS"} }

// Timens is the clocks of time namespace id at dump (CRIU writes id 0 for
// the root time namespace).
func Timens(id uint32) File { return File{fmt.Sprintf("timens-%d.img", id), "TIMENS"} }

// TCPStream is an established TCP connection of socket ino: its
// tcp_stream_entry, then the bytes of its receive queue and of its send
// queue.
func TCPStream(ino uint32) File { return File{fmt.Sprintf("tcp-stream-%d.img", ino), "TCP_STREAM"} }

// Utsns is the host and domain name of UTS namespace id (utsns_entry),
// written for a namespace the tree has of its own.
func Utsns(id uint32) File { return File{fmt.Sprintf("utsns-%d.img", id), "UTSNS"} }

// IpcVar is the sysctls of IPC namespace id (ipc_var_entry), written for a
// namespace the tree has of its own.
func IpcVar(id uint32) File { return File{fmt.Sprintf("ipcns-var-%d.img", id), "IPC_VAR"} }

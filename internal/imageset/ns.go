package imageset

import (
	"strconv"

	"google.golang.org/protobuf/proto"

	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
)

// IpcSysctl is one sysctl of an IPC namespace that CRIU's ipc_var_entry
// holds (kernel.sem, a vector, is sem_ctls).
type IpcSysctl struct {
	Name string // as sysctl(8) spells it
	// Optional: absent from some kernels (auto_msgmni went in 4.1) or
	// from older images.
	Optional bool
	u32      **uint32
	u64      **uint64
}

// Text returns the value the entry holds as the sysctl file takes it (an
// int sysctl's -1 is stored as 0xffffffff), and whether it holds one.
func (s IpcSysctl) Text() (string, bool) {
	if s.u64 != nil {
		if *s.u64 == nil {
			return "", false
		}
		return strconv.FormatUint(**s.u64, 10), true
	}
	if *s.u32 == nil {
		return "", false
	}
	return strconv.FormatInt(int64(int32(**s.u32)), 10), true
}

// Wide says whether the sysctl is an unsigned long (read it as such).
func (s IpcSysctl) Wide() bool { return s.u64 != nil }

// Set stores v in the entry.
func (s IpcSysctl) Set(v uint64) {
	if s.u64 != nil {
		*s.u64 = proto.Uint64(v)
		return
	}
	*s.u32 = proto.Uint32(uint32(v))
}

// IpcVarSysctls lists the sysctls of e, each bound to its field: dump
// fills them, restore writes them back, from the one table.
func IpcVarSysctls(e *ipc_var.IpcVarEntry) []IpcSysctl {
	u32 := func(name string, f **uint32, opt bool) IpcSysctl { return IpcSysctl{Name: name, u32: f, Optional: opt} }
	return []IpcSysctl{
		u32("kernel.msgmax", &e.MsgCtlmax, false),
		u32("kernel.msgmnb", &e.MsgCtlmnb, false),
		u32("kernel.msgmni", &e.MsgCtlmni, false),
		u32("kernel.auto_msgmni", &e.AutoMsgmni, true),
		{Name: "kernel.shmmax", u64: &e.ShmCtlmax},
		{Name: "kernel.shmall", u64: &e.ShmCtlall},
		u32("kernel.shmmni", &e.ShmCtlmni, false),
		u32("kernel.shm_rmid_forced", &e.ShmRmidForced, false),
		u32("fs.mqueue.queues_max", &e.MqQueuesMax, false),
		u32("fs.mqueue.msg_max", &e.MqMsgMax, false),
		u32("fs.mqueue.msgsize_max", &e.MqMsgsizeMax, false),
		u32("fs.mqueue.msg_default", &e.MqMsgDefault, true),
		u32("fs.mqueue.msgsize_default", &e.MqMsgsizeDefault, true),
		u32("kernel.msg_next_id", &e.MsgNextId, true),
		u32("kernel.sem_next_id", &e.SemNextId, true),
		u32("kernel.shm_next_id", &e.ShmNextId, true),
	}
}

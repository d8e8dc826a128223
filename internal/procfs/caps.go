package procfs

import (
	"strconv"

	"github.com/cryo-project/cryo/internal/kabi"
)

// TaskCaps returns the capability sets of thread tid, or of the calling
// thread for tid 0, from its status file: unlike capget(2) it also gives
// the ambient and bounding sets.
func TaskCaps(tid int) (kabi.Caps, error) {
	path := "/proc/thread-self/status"
	if tid != 0 {
		path = "/proc/" + strconv.Itoa(tid) + "/status"
	}
	data, err := ReadFileBounded(path, MaxSmallFileSize)
	if err != nil {
		return kabi.Caps{}, err
	}
	st, err := parseStatus(path, data)
	if err != nil {
		return kabi.Caps{}, err
	}
	return kabi.Caps{Eff: st.CapEff, Prm: st.CapPrm, Inh: st.CapInh, Amb: st.CapAmb, Bnd: st.CapBnd}, nil
}

// OwnCaps returns the calling thread's capability sets.
func OwnCaps() (kabi.Caps, error) { return TaskCaps(0) }

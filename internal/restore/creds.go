package restore

// Credentials (docs/security.md).
//
// An image is data: its user may have written every byte of it, checksums
// included. So the final credentials of every restored thread are what the
// image asks for, checked against what the restorer may give, and a field
// the image leaves out means the least (no capability, no group, an empty
// bounding set), never "what the thread has now". What the thread has now
// is the stub's: everything for a root cryo, and for a non-root cryo the
// CAP_CHECKPOINT_RESTORE it handed on as an ambient capability (caps.go).
// All of it is taken back here, on every thread, before the program runs,
// and what the kernel then shows is read back and compared.
//
// Credentials are per thread in Linux (a raw setresuid changes the calling
// thread only), and so they are in the image and here.

import (
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/inject"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// ErrCredsRefused marks credentials of an image that this restorer may not
// give: the restore stops before the program runs.
var ErrCredsRefused = errs.ErrCredsRefused

// maxGroups is NGROUPS_MAX.
const maxGroups = 65536

// credState is one thread's credentials, as the image records them and as
// /proc/PID/task/TID/status and PR_GET_SECUREBITS show them.
type credState struct {
	uid, gid [4]uint32 // real, effective, saved set, filesystem
	groups   []uint32  // sorted: the kernel keeps and shows them sorted
	caps     kabi.Caps
	secbits  uint32
	nnp      bool
}

// wantCreds is what the image asks of one thread. Every required field of
// creds_entry is there (the decoder refuses an entry without one); a
// capability set or group list that is left out is empty.
func wantCreds(cr *creds.CredsEntry) (credState, error) {
	if cr == nil {
		return credState{}, fmt.Errorf("no creds entry: %w", ErrCredsRefused)
	}
	w := credState{
		uid:     [4]uint32{cr.GetUid(), cr.GetEuid(), cr.GetSuid(), cr.GetFsuid()},
		gid:     [4]uint32{cr.GetGid(), cr.GetEgid(), cr.GetSgid(), cr.GetFsgid()},
		secbits: cr.GetSecbits(),
		nnp:     cr.GetNoNewPrivs() != 0,
	}
	for _, f := range []struct {
		name  string
		words []uint32
		set   *uint64
	}{
		{"cap_eff", cr.GetCapEff(), &w.caps.Eff}, {"cap_prm", cr.GetCapPrm(), &w.caps.Prm},
		{"cap_inh", cr.GetCapInh(), &w.caps.Inh}, {"cap_amb", cr.GetCapAmb(), &w.caps.Amb},
		{"cap_bnd", cr.GetCapBnd(), &w.caps.Bnd},
	} {
		for i, word := range f.words {
			if i >= 2 {
				if word != 0 {
					return credState{}, fmt.Errorf("%s: capabilities above 63 (word %d is %#x): %w", f.name, i, word, ErrCredsRefused)
				}
				continue
			}
			*f.set |= uint64(word) << (32 * i)
		}
	}
	c := w.caps
	switch {
	case c.Eff&^c.Prm != 0:
		return credState{}, fmt.Errorf("cap_eff holds %s, not in cap_prm: %w", kabi.CapNames(c.Eff&^c.Prm), ErrCredsRefused)
	case c.Amb&^(c.Prm&c.Inh) != 0:
		return credState{}, fmt.Errorf("cap_amb holds %s, not in both cap_prm and cap_inh: %w", kabi.CapNames(c.Amb&^(c.Prm&c.Inh)), ErrCredsRefused)
	case w.secbits&^kabi.SECURE_ALL != 0:
		return credState{}, fmt.Errorf("secbits %#x: unknown bits %#x: %w", w.secbits, w.secbits&^kabi.SECURE_ALL, ErrCredsRefused)
	case len(cr.GetGroups()) > maxGroups:
		return credState{}, fmt.Errorf("groups: %d, more than NGROUPS_MAX: %w", len(cr.GetGroups()), ErrCredsRefused)
	}
	w.groups = slices.Clone(cr.GetGroups())
	slices.Sort(w.groups)
	return w, nil
}

// threadCreds reads what the kernel shows of thread t. Securebits only
// the thread itself can tell: they are asked by injection.
func (c *child) threadCreds(t *inject.Task) (credState, error) {
	h, err := c.statusCreds(t)
	if err != nil {
		return credState{}, err
	}
	secbits, err := c.call(t, "prctl(PR_GET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return credState{}, err
	}
	h.secbits = uint32(secbits)
	return h, nil
}

// statusCreds is threadCreds but for securebits, from
// /proc/PID/task/TID/status alone.
func (c *child) statusCreds(t *inject.Task) (credState, error) {
	st, err := procfs.TaskStatusPid(c.pid, t.Tid)
	if err != nil {
		return credState{}, err
	}
	h := credState{
		uid: st.Uid, gid: st.Gid, groups: slices.Clone(st.Groups), nnp: st.NoNewPrivs,
		caps: kabi.Caps{Eff: st.CapEff, Prm: st.CapPrm, Inh: st.CapInh, Amb: st.CapAmb, Bnd: st.CapBnd},
	}
	slices.Sort(h.groups)
	return h, nil
}

// refuse says which of w the restorer cannot give a thread that holds h,
// of which handed are capabilities cryo handed on only to build it. The
// kernel would refuse most of these itself; checking first names the field
// instead of an EPERM of some injected call, and covers what the kernel
// allows but an image must not obtain: keeping what cryo handed on.
func refuse(w, h credState, handed uint64) error {
	var errs []string
	no := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	own := h.caps.Prm &^ handed // what the restorer itself may give
	may := func(n uintptr) bool { return own&(1<<n) != 0 }
	if extra := (w.caps.Prm | w.caps.Eff | w.caps.Amb) &^ own; extra != 0 {
		no("capabilities %s, which a restore by uid %d cannot give (restore it as root)", kabi.CapNames(extra), os.Getuid())
	}
	inhMay := (h.caps.Prm | h.caps.Inh) &^ handed
	if may(unix.CAP_SETPCAP) {
		inhMay |= h.caps.Bnd
	}
	if extra := w.caps.Inh &^ inhMay; extra != 0 {
		no("cap_inh holds %s, which a restore by uid %d cannot give", kabi.CapNames(extra), os.Getuid())
	}
	if extra := w.caps.Bnd &^ h.caps.Bnd; extra != 0 {
		no("cap_bnd holds %s, which cryo's own bounding set lacks: a bounding set never grows", kabi.CapNames(extra))
	}
	if drop := h.caps.Bnd &^ w.caps.Bnd; drop != 0 && !may(unix.CAP_SETPCAP) {
		no("cap_bnd lacks %s: dropping them from the bounding set needs CAP_SETPCAP (restore it as root)", kabi.CapNames(drop))
	}
	if diff := w.secbits ^ h.secbits; diff != 0 {
		locked := (h.secbits & kabi.SECURE_ALL_LOCKS) >> 1
		switch {
		case diff&(locked|locked<<1) != 0:
			no("secbits %#x: cryo runs with securebits %#x, locked", w.secbits, h.secbits)
		case diff != kabi.SECBIT_KEEP_CAPS && !may(unix.CAP_SETPCAP):
			no("secbits %#x: changing securebits (cryo's are %#x) needs CAP_SETPCAP", w.secbits, h.secbits)
		}
	}
	if h.nnp && !w.nnp {
		no("no_new_privs 0: cryo runs with no_new_privs set, which no process can clear")
	}
	ids := func(name string, want, have [4]uint32, capability uintptr) {
		if may(capability) {
			return
		}
		for i, n := range [4]string{"", "e", "s", "fs"} {
			if v := want[i]; v != have[0] && v != have[1] && v != have[2] && !(i == 3 && v == have[3]) {
				no("%s%s %d: a restore by uid %d may only give its own (%d, %d, %d) without %s",
					n, name, v, os.Getuid(), have[0], have[1], have[2], kabi.CapNames(1<<capability))
			}
		}
	}
	ids("uid", w.uid, h.uid, unix.CAP_SETUID)
	ids("gid", w.gid, h.gid, unix.CAP_SETGID)
	if !slices.Equal(w.groups, h.groups) && !may(unix.CAP_SETGID) {
		no("groups %v: changing them from cryo's %v needs CAP_SETGID (restore it as root)", w.groups, h.groups)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrCredsRefused, strings.Join(errs, "; "))
	}
	return nil
}

// diff names the first field in which got is not w.
func (w credState) diff(got credState) error {
	for _, f := range []struct {
		name      string
		want, got any
		same      bool
	}{
		{"uids (real, effective, saved, fs)", w.uid, got.uid, w.uid == got.uid},
		{"gids (real, effective, saved, fs)", w.gid, got.gid, w.gid == got.gid},
		{"groups", w.groups, got.groups, slices.Equal(w.groups, got.groups)},
		{"effective capabilities", kabi.CapNames(w.caps.Eff), kabi.CapNames(got.caps.Eff), w.caps.Eff == got.caps.Eff},
		{"permitted capabilities", kabi.CapNames(w.caps.Prm), kabi.CapNames(got.caps.Prm), w.caps.Prm == got.caps.Prm},
		{"inheritable capabilities", kabi.CapNames(w.caps.Inh), kabi.CapNames(got.caps.Inh), w.caps.Inh == got.caps.Inh},
		{"ambient capabilities", kabi.CapNames(w.caps.Amb), kabi.CapNames(got.caps.Amb), w.caps.Amb == got.caps.Amb},
		{"bounding set", kabi.CapNames(w.caps.Bnd), kabi.CapNames(got.caps.Bnd), w.caps.Bnd == got.caps.Bnd},
		{"securebits", w.secbits, got.secbits, w.secbits == got.secbits},
		{"no_new_privs", w.nnp, got.nnp, w.nnp == got.nnp},
	} {
		if !f.same {
			return fmt.Errorf("%s are %v after restore, want %v", f.name, f.got, f.want)
		}
	}
	return nil
}

// credsOf is the creds entry of thread i. Every thread has its own: a
// thread without one is refused, not given its leader's or the stub's.
func (r *restorer) credsOf(i int) (credState, error) {
	w, err := wantCreds(r.l.cores[i].GetThreadCore().GetCreds())
	if err != nil {
		return credState{}, fmt.Errorf("core-%d.img: %w", r.c.threads[i].Tid, err)
	}
	return w, nil
}

// restoreCreds gives every thread its credentials, then its seccomp
// filters, last: each may take away what the steps before needed. A filter
// that the thread could only have installed with CAP_SYS_ADMIN (no
// no_new_privs) goes in before the capabilities are lowered.
func (r *restorer) restoreCreds() error {
	c := r.c
	wants := make([]credState, len(c.threads))
	haves := make([]credState, len(c.threads))
	for i, t := range c.threads {
		var err error
		if wants[i], err = r.credsOf(i); err != nil {
			return err
		}
		if haves[i], err = c.threadCreds(t); err != nil {
			return err
		}
		if err := refuse(wants[i], haves[i], c.handedOn); err != nil {
			return fmt.Errorf("core-%d.img: %w", t.Tid, err)
		}
	}
	for i, t := range c.threads {
		w := wants[i]
		if w.nnp && !haves[i].nnp {
			if _, err := c.call(t, "prctl(PR_SET_NO_NEW_PRIVS)", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1); err != nil {
				return err
			}
		}
		tc := r.l.cores[i].GetThreadCore()
		late := w.nnp || w.caps.Has(unix.CAP_SYS_ADMIN)
		if tc.GetSeccompMode() == 2 && !late {
			if err := r.installSeccomp(t, i); err != nil {
				return fmt.Errorf("thread %d: %w", t.Tid, err)
			}
		}
		if err := c.setCreds(t, w, haves[i]); err != nil {
			return fmt.Errorf("thread %d: %w", t.Tid, err)
		}
		if err := r.afterCreds(t, i); err != nil {
			return fmt.Errorf("thread %d: %w", t.Tid, err)
		}
		if tc.GetSeccompMode() == 2 && late {
			if err := r.installSeccomp(t, i); err != nil {
				return fmt.Errorf("thread %d: %w", t.Tid, err)
			}
		}
	}
	for i, t := range c.threads {
		got, err := c.threadCreds(t)
		if err != nil {
			return err
		}
		if err := wants[i].diff(got); err != nil {
			return fmt.Errorf("thread %d: %w", t.Tid, err)
		}
	}
	return nil
}

// setCreds takes thread t from h to w. The order is forced by the kernel:
//   - the bounding set, groups and gids while every capability is still
//     effective (they need CAP_SETPCAP and CAP_SETGID);
//   - the uids with PR_SET_KEEPCAPS, since a change away from uid 0 clears
//     the permitted set otherwise, and always clears the effective one;
//   - the effective set raised again, for what follows: fsgid and fsuid
//     (setresuid and setresgid reset them; a change of fsuid away from 0
//     drops the file capabilities from the effective set);
//   - the inheritable set, then the ambient set (raising needs the
//     capability in both permitted and inheritable), then securebits
//     (SECBIT_NO_CAP_AMBIENT_RAISE would stop the raise; changing them
//     needs CAP_SETPCAP);
//   - last the image's three sets, which drop whatever cryo had.
func (c *child) setCreds(t *inject.Task, w, h credState) error {
	if w.diff(h) == nil {
		return nil
	}
	call := func(name string, nr uintptr, args ...uint64) error {
		_, err := c.call(t, name, nr, args...)
		return err
	}
	for n := uint64(0); n < 64; n++ {
		if h.caps.Bnd&^w.caps.Bnd&(1<<n) != 0 {
			if err := call("prctl(PR_CAPBSET_DROP)", unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, n); err != nil {
				return fmt.Errorf("drop %s from the bounding set: %w", kabi.CapNames(1<<n), err)
			}
		}
	}
	if !slices.Equal(w.groups, h.groups) {
		gp := uint64(0)
		if len(w.groups) > 0 {
			b := make([]byte, 0, 4*len(w.groups))
			for _, g := range w.groups {
				b = binary.NativeEndian.AppendUint32(b, g)
			}
			var err error
			if gp, err = c.arg(b); err != nil {
				return err
			}
		}
		if err := call("setgroups", unix.SYS_SETGROUPS, uint64(len(w.groups)), gp); err != nil {
			return hintPrivilege(err, "changing groups needs CAP_SETGID: restore another user's process as root")
		}
	}
	if [3]uint32(w.gid[:3]) != [3]uint32(h.gid[:3]) {
		if err := call("setresgid", unix.SYS_SETRESGID, uint64(w.gid[0]), uint64(w.gid[1]), uint64(w.gid[2])); err != nil {
			return hintPrivilege(err, "changing gids needs CAP_SETGID: restore another user's process as root")
		}
	}
	if [3]uint32(w.uid[:3]) != [3]uint32(h.uid[:3]) {
		keep := h.secbits&kabi.SECBIT_KEEP_CAPS == 0 && h.secbits&kabi.SECBIT_KEEP_CAPS_LOCKED == 0
		if keep {
			if err := call("prctl(PR_SET_KEEPCAPS)", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1); err != nil {
				return err
			}
		}
		if err := call("setresuid", unix.SYS_SETRESUID, uint64(w.uid[0]), uint64(w.uid[1]), uint64(w.uid[2])); err != nil {
			return hintPrivilege(err, "changing uids needs CAP_SETUID: restore another user's process as root")
		}
		if keep {
			if err := call("prctl(PR_SET_KEEPCAPS)", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 0); err != nil {
				return err
			}
		}
	}
	// Only the KEEPCAPS toggle above touched the securebits, and it put
	// them back.
	cur, err := c.statusCreds(t)
	if err != nil {
		return err
	}
	cur.secbits = h.secbits
	if err := c.capset(t, kabi.Caps{Eff: cur.caps.Prm, Prm: cur.caps.Prm, Inh: w.caps.Inh}, cur.caps); err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		nr    uintptr
		want  uint32
		fixed bool
	}{
		{"setfsgid", unix.SYS_SETFSGID, w.gid[3], cur.gid[3] == w.gid[3]},
		{"setfsuid", unix.SYS_SETFSUID, w.uid[3], cur.uid[3] == w.uid[3]},
	} {
		if f.fixed {
			continue
		}
		// setfsuid and setfsgid return the old id and never fail; an id
		// that is not a valid one (-1) asks without changing it.
		if err := call(f.name, f.nr, uint64(f.want)); err != nil {
			return err
		}
		got, err := c.call(t, f.name+"(-1)", f.nr, uint64(^uint32(0)))
		if err != nil {
			return err
		}
		if uint32(got) != f.want {
			return fmt.Errorf("%s(%d) left it at %d: %w", f.name, f.want, got, unix.EPERM)
		}
	}
	if cur, err = c.statusCreds(t); err != nil {
		return err
	}
	cur.secbits = h.secbits
	if cur.caps.Amb != w.caps.Amb {
		if err := call("prctl(PR_CAP_AMBIENT_CLEAR_ALL)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL); err != nil {
			return err
		}
		for n := uint64(0); n < 64; n++ {
			if w.caps.Amb&(1<<n) != 0 {
				if err := call("prctl(PR_CAP_AMBIENT_RAISE)", unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, n); err != nil {
					return fmt.Errorf("ambient %s: %w", kabi.CapNames(1<<n), err)
				}
			}
		}
	}
	switch cur.secbits ^ w.secbits {
	case 0:
	case kabi.SECBIT_KEEP_CAPS:
		if err := call("prctl(PR_SET_KEEPCAPS)", unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, uint64(w.secbits&kabi.SECBIT_KEEP_CAPS)>>4); err != nil {
			return err
		}
	default:
		if err := call("prctl(PR_SET_SECUREBITS)", unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, uint64(w.secbits)); err != nil {
			return fmt.Errorf("securebits %#x: %w", w.secbits, err)
		}
	}
	return c.capset(t, w.caps, cur.caps)
}

// capset gives t the effective, permitted and inheritable sets of want,
// unless it has them already.
func (c *child) capset(t *inject.Task, want, have kabi.Caps) error {
	if want.Eff == have.Eff && want.Prm == have.Prm && want.Inh == have.Inh {
		return nil
	}
	args := kabi.NewCapsetArgs(want)
	p, err := c.arg(kabi.Bytes(&args))
	if err != nil {
		return err
	}
	if _, err := c.call(t, "capset", unix.SYS_CAPSET, p, p+uint64(kabi.CapsetDataOffset)); err != nil {
		return fmt.Errorf("capset effective %s, permitted %s, inheritable %s: %w",
			kabi.CapNames(want.Eff), kabi.CapNames(want.Prm), kabi.CapNames(want.Inh), err)
	}
	return nil
}

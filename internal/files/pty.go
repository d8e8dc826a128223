package files

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"

	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/procfs"
)

// Pseudo-terminals inside the tree: a master (/dev/ptmx) the tree holds,
// with its slave (/dev/pts/N, or /dev/tty on it) held in the tree too, as
// tmux, screen or a terminal emulator has them, or closed after use
// (closedSlave); and slaves whose master was closed (hungSlave).
//
// CRIU's layout: each open file description is a tty_file_entry in
// files.img whose
// tty_info_id is index<<1 (the slave) or index<<1|1 (the master), or
// 2012 for /dev/tty; tty-info.img holds one tty_info_entry per side, with
// the termios, locked termios, window size, locked, packet and exclusive
// modes and the session and foreground group the slave is the controlling
// terminal of; tty-data.img the bytes each side had not read yet.
//
// # The index
//
// The slave's name (/dev/pts/N) is what programs see (ttyname, /proc
// links), and the host's devpts gives out the lowest free index. Restore
// does what CRIU does: /dev/ptmx is opened, the lower indices held, until
// the index comes; if it is taken, the restore fails before anything of
// the tree runs, naming it.
//
// # The queued bytes
//
// A terminal cannot be read without consuming, so the dump reads both
// queues with the tree frozen and puts them back at once, exactly, as a
// restore does: what the master had not read is written through the
// slave with output processing off; what the slave had not read is
// written through the master with its termios set so that every byte
// lands as it was (no signal, no translation, line ends where they were,
// every special character quoted with LNEXT), echo on so that the echoed
// copy, read back from the master and dropped, tells when the line
// discipline has taken all of it; then the termios are set back. A
// canonical slave's queue is read line by line, then, the lines gone, in
// non-canonical mode for the unfinished line (switching ICANON with an
// empty queue changes nothing in it). What tty-data.img cannot hold (a
// line ended by the EOF character, a quoted line end) is put back and
// the dump refused.
//
// # The controlling terminal
//
// The kernel gives a process its controlling terminal only at fork or
// through TIOCSCTTY in a session leader, so the pair of a session's
// terminal is made in the session leader as soon as its memory is in,
// before it forks anything (ControllingTerminal), and its foreground
// group set once the groups exist (Foreground).
//
// # Kernel facts this file relies on (Linux 6.18)
//
// Termios, locked termios and window size ioctls on a master act on its
// slave, and TIOCGSID and TIOCGPGRP on a master answer for the slave
// whoever asks. A master in packet mode queues a status for its reader
// when IXON or EXTPROC's termios change. A failed open of a locked slave
// sets TTY_IO_ERROR on it: every read of it fails with EIO until an open
// succeeds. TIOCGPTPEER opens the slave without the O_LARGEFILE open(2)
// adds, and keeps O_CLOEXEC in the file's flags. A slave's queue survives
// its last close while the master is open.

// cttyInfoID is the tty_info_entry of /dev/tty: CRIU's CTTY_INDEX << 1.
const cttyInfoID = 1006 << 1

// ptyInfoName names a tty_file_entry's terminal, for `cryo show`.
func ptyInfoName(id uint32) string {
	switch {
	case id == cttyInfoID:
		return "/dev/tty"
	case id&1 == 1:
		return fmt.Sprintf("/dev/ptmx (of /dev/pts/%d)", id>>1)
	}
	return fmt.Sprintf("/dev/pts/%d", id>>1)
}

// ptyPair is one pseudo-terminal of the dumped tree.
type ptyPair struct {
	index int
	// master and slave are cryo's copies of the master's open file
	// description (a master has one) and of one on the slave (/dev/pts/N
	// or /dev/tty); -1: the tree holds none.
	master, slave int
	masterFile    *fdinfo.FileEntry
	masterLink    string
	masterSt      unix.Stat_t
	slaveLink     string
	slaveSt       unix.Stat_t
	hasSlaveSt    bool
	ctty          bool // /dev/tty is open on it
	// closed: no one had the slave open; slave is cryo's own open of it,
	// closed once the pty is read.
	closed bool
}

func (td *ttyDump) pair(index int) *ptyPair {
	p := td.ptys[index]
	if p == nil {
		p = &ptyPair{index: index, master: -1, slave: -1}
		td.ptys[index] = p
		td.order = append(td.order, p)
	}
	return p
}

// fdCloser closes a raw fd of cryo's own.
type fdCloser int

func (c fdCloser) Close() error { return unix.Close(int(c)) }

// keepCopy duplicates fd's copy for the rest of the dump.
func keepCopy(d *Dumper, fd *Fd) (int, error) {
	cp, err := fd.Copy()
	if err != nil {
		return -1, err
	}
	dup, err := unix.FcntlInt(uintptr(cp), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	d.keep(fdCloser(dup))
	return dup, nil
}

func (td *ttyDump) master(d *Dumper, fd *Fd) (uint32, error) {
	cp, err := fd.Copy()
	if err != nil {
		return 0, err
	}
	idx, err := unix.IoctlGetInt(cp, unix.TIOCGPTN)
	if err != nil {
		return 0, fmt.Errorf("pty master: TIOCGPTN: %w", err)
	}
	p := td.pair(idx)
	if p.master >= 0 {
		return 0, fmt.Errorf("a second open file description of the master of /dev/pts/%d: %w", idx, errs.ErrNotSupported)
	}
	if p.master, err = keepCopy(d, fd); err != nil {
		return 0, err
	}
	p.masterLink, p.masterSt = fd.Link, *fd.Stat
	p.masterFile = &fdinfo.FileEntry{Type: fdinfo.FdTypes_TTY.Enum(), Tty: &tty.TtyFileEntry{
		TtyInfoId: proto.Uint32(uint32(idx)<<1 | 1), Flags: proto.Uint32(fd.Flags), Fown: noOwner()}}
	return d.Add(p.masterFile), nil
}

// keepSlave notes an fd on the slave of pty index: a /dev/pts/N one if
// isSlave, else /dev/tty.
func (td *ttyDump) keepSlave(fd *Fd, index int, isSlave bool) {
	p := td.pair(index)
	if isSlave && !p.hasSlaveSt {
		p.slaveLink, p.slaveSt, p.hasSlaveSt = fd.Link, *fd.Stat, true
	}
}

// ptyState is what a dump reads of one pty.
type ptyState struct {
	t, locked    unix.Termios
	ws           unix.Winsize
	isLocked     bool
	packet       bool
	mexcl, sexcl bool
	sid, pgrp    int
	q            ptyQueues
}

// checkPtys reads every pty the tree holds the master of, once the tree
// is dumped, and refuses what restore could not give back.
func (td *ttyDump) checkPtys(d *Dumper) error {
	var ours []*ptyPair
	defer func() {
		for _, p := range ours {
			if p.closed && p.slave >= 0 {
				unix.Close(p.slave) // closed again, as it was
				p.slave = -1
			}
		}
	}()
	for _, p := range td.order {
		if p.master < 0 {
			continue // an inherited terminal (--shell-job)
		}
		name := fmt.Sprintf("pseudo-terminal /dev/pts/%d (master %s)", p.index, p.masterLink)
		if !p.hasSlaveSt {
			p.slaveLink = "/dev/pts/" + strconv.Itoa(p.index)
			if !p.ctty {
				err := p.closedSlave()
				if p.closed {
					ours = append(ours, p) // for the deferred close, whatever comes
					continue
				}
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			} else if err := unix.Stat(p.slaveLink, &p.slaveSt); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		ours = append(ours, p)
	}
	if len(ours) == 0 {
		return nil
	}
	t0 := time.Now()
	defer func() { d.log().Debug("ptys read", "ptys", len(ours), "took", time.Since(t0)) }()
	// Copies of a slave fd, taken now that every process is seen.
	for _, p := range ours {
		if err := td.slaveCopy(d, p); err != nil {
			return err
		}
	}
	if err := checkOutside(d, ours); err != nil {
		return err
	}
	stats := map[int]*procfs.Stat{}
	for pid := range d.locks.pids {
		st, err := procfs.StatPid(pid)
		if err != nil {
			return err
		}
		stats[pid] = st
	}
	for _, p := range ours {
		name := "pseudo-terminal " + p.slaveLink
		s, err := readPty(p, stats)
		if p.closed {
			unix.Close(p.slave) // closed again, as it was
			p.slave = -1
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		td.record(d, p, s)
	}
	return nil
}

// closedSlave takes up a pty whose master the tree holds and whose slave
// no one has open any more (the master reads EIO, polls POLLHUP: a shell
// gone, its terminal emulator not yet). Its slave is opened again, for the
// dump to read its state and queue, and closed again once read, which
// puts the pair back as it was. Restore does the same: the slave it opens
// to set the pair up is closed at the end. A pty whose slave was never
// opened, or is open outside the tree, is refused: opening it would change
// the first, and the second cannot come back.
func (p *ptyPair) closedSlave() error {
	pfd := []unix.PollFd{{Fd: int32(p.master), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return fmt.Errorf("poll the master: %w", err)
	}
	if pfd[0].Revents&unix.POLLHUP == 0 {
		return fmt.Errorf("the tree holds its master but no fd on its slave, which is open outside the tree or was never opened: cryo does not restore it: %w", errs.ErrNotSupported)
	}
	if locked, err := unix.IoctlGetInt(p.master, unix.TIOCGPTLCK); err != nil || locked != 0 {
		return fmt.Errorf("its slave is closed and the pair locked (%v), which cryo cannot read: %w", err, errs.ErrNotSupported)
	}
	fd, err := unix.Open(p.slaveLink, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open its closed slave again: %w", err)
	}
	if err := unix.Fstat(fd, &p.slaveSt); err != nil {
		unix.Close(fd)
		return err
	}
	p.slave, p.closed = fd, true
	return nil
}

// hungSlave records a slave whose master was closed, as CRIU does: a
// tty_info_entry without termios (nothing can be read of a hung-up
// terminal). Restore makes the pair at its index, opens the slave fds and
// closes the master, which hangs them up again.
func (td *ttyDump) hungSlave(tf *ttyFile) error {
	if p := td.ptys[tf.index]; p != nil && p.master >= 0 {
		return fmt.Errorf("hung up, but the tree holds a master of index %d: %w", tf.index, image.ErrImageCorrupt)
	}
	id := uint32(tf.index) << 1
	tf.e.Tty = &tty.TtyFileEntry{Id: proto.Uint32(tf.e.GetId()), TtyInfoId: proto.Uint32(id), Flags: proto.Uint32(tf.flags), Fown: noOwner()}
	for _, e := range td.infos {
		if e.GetId() == id {
			return nil
		}
	}
	no := proto.Bool(false)
	td.infos = append(td.infos, &tty.TtyInfoEntry{Id: proto.Uint32(id), Type: tty.TtyType_PTY.Enum(), Locked: no, Exclusive: no, PacketMode: no,
		Sid: proto.Uint32(0), Pgrp: proto.Uint32(0), Rdev: proto.Uint32(uint32(tf.st.Rdev)), Dev: proto.Uint32(uint32(tf.st.Dev)),
		Pty: &tty.TtyPtyEntry{Index: proto.Uint32(uint32(tf.index))}})
	return nil
}

// slaveCopy finds an fd of the tree on the slave of p and keeps a copy.
func (td *ttyDump) slaveCopy(d *Dumper, p *ptyPair) error {
	if p.closed {
		return nil // cryo's own, from closedSlave
	}
	for _, tf := range td.files {
		if tf.index != p.index || tf.e.GetTty() == nil {
			continue
		}
		cp, err := kabi.GetFd(tf.pid, tf.num)
		if err != nil {
			return fmt.Errorf("copy fd %d of %d: %w", tf.num, tf.pid, err)
		}
		d.keep(fdCloser(cp))
		p.slave = cp
		return nil
	}
	return fmt.Errorf("pseudo-terminal /dev/pts/%d: no fd on its slave", p.index)
}

// checkOutside refuses a pty that a process outside the tree holds or has
// as its controlling terminal: restore brings back the tree's side only.
func checkOutside(d *Dumper, ours []*ptyPair) error {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || d.locks.pids[pid] {
			continue
		}
		st, err := procfs.StatPid(pid)
		if err != nil {
			continue // gone meanwhile
		}
		for _, p := range ours {
			if uint64(st.TtyNr) == p.slaveSt.Rdev && st.State != 'Z' {
				return fmt.Errorf("pseudo-terminal %s: the controlling terminal of process %d, outside the tree: %w", p.slaveLink, pid, errs.ErrNotSupported)
			}
		}
		dir := "/proc/" + e.Name() + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range fds {
			var fst unix.Stat_t
			if unix.Stat(dir+"/"+f.Name(), &fst) != nil || fst.Mode&unix.S_IFMT != unix.S_IFCHR {
				continue
			}
			for _, p := range ours {
				held := fst.Rdev == p.slaveSt.Rdev && fst.Dev == p.slaveSt.Dev
				if fst.Rdev == p.masterSt.Rdev && fst.Dev == p.masterSt.Dev {
					n, _ := strconv.Atoi(f.Name())
					if fi, err := procfs.FdinfoPid(pid, n); err == nil {
						for _, kv := range fi.Extra {
							held = held || (kv.Key == "tty-index" && kv.Value == strconv.Itoa(p.index))
						}
					}
				}
				if held {
					return fmt.Errorf("pseudo-terminal %s: open in process %d (fd %s), outside the tree: %w", p.slaveLink, pid, f.Name(), errs.ErrNotSupported)
				}
			}
		}
	}
	return nil
}

// readPty reads what the kernel keeps of pty p, its queues included (put
// back at once), and checks its session against the tree.
func readPty(p *ptyPair, stats map[int]*procfs.Stat) (*ptyState, error) {
	m := p.master
	s := &ptyState{}
	t, err := unix.IoctlGetTermios(m, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("TCGETS: %w", err)
	}
	s.t = *t
	if t, err = unix.IoctlGetTermios(m, unix.TIOCGLCKTRMIOS); err != nil {
		return nil, fmt.Errorf("TIOCGLCKTRMIOS: %w", err)
	}
	s.locked = *t
	ws, err := unix.IoctlGetWinsize(m, unix.TIOCGWINSZ)
	if err != nil {
		return nil, fmt.Errorf("TIOCGWINSZ: %w", err)
	}
	s.ws = *ws
	for _, q := range []struct {
		fd  int
		req uint
		v   *bool
	}{{m, unix.TIOCGPTLCK, &s.isLocked}, {m, unix.TIOCGPKT, &s.packet}, {m, unix.TIOCGEXCL, &s.mexcl}, {p.slave, unix.TIOCGEXCL, &s.sexcl}} {
		v, err := unix.IoctlGetInt(q.fd, q.req)
		if err != nil {
			return nil, fmt.Errorf("ioctl %#x: %w", q.req, err)
		}
		*q.v = v != 0
	}
	if err := ptySession(p, s, stats); err != nil {
		return nil, err
	}
	pfd := []unix.PollFd{{Fd: int32(m), Events: unix.POLLIN | unix.POLLPRI}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return nil, fmt.Errorf("poll the master: %w", err)
	}
	if pfd[0].Revents&unix.POLLHUP != 0 {
		return nil, fmt.Errorf("hung up: %w", errs.ErrNotSupported)
	}
	if s.packet && pfd[0].Revents&unix.POLLPRI != 0 {
		return nil, fmt.Errorf("in packet mode with a status change its master has not read, which cryo cannot read without consuming: %w", errs.ErrNotSupported)
	}
	if s.t.Lflag&unix.EXTPROC != 0 {
		if n, err := unix.IoctlGetInt(p.slave, unix.TIOCINQ); err != nil || n > 0 {
			return nil, fmt.Errorf("%d bytes of unread input in external-processing mode (EXTPROC), which cryo does not read (%v): %w", n, err, errs.ErrNotSupported)
		}
	}
	if s.packet {
		// Packet mode off while the queues are read and put back: a
		// change of IXON or of EXTPROC's termios would queue a status for
		// the master. Set again, it starts with no status, as it had.
		if err := unix.IoctlSetPointerInt(m, unix.TIOCPKT, 0); err != nil {
			return nil, fmt.Errorf("TIOCPKT: %w", err)
		}
		defer unix.IoctlSetPointerInt(m, unix.TIOCPKT, 1)
	}
	q, rerr := readQueues(m, p.slave, &s.t)
	if q != nil {
		// Whatever happens next, the terminal gets its bytes back.
		if err := refill(m, p.slave, &s.t, &s.locked, q); err != nil {
			return nil, fmt.Errorf("put its unread bytes back: %w", errors.Join(rerr, err))
		}
		s.q = *q
	}
	if rerr != nil {
		return nil, rerr
	}
	if err := s.q.representable(&s.t); err != nil {
		return nil, err
	}
	return s, nil
}

// ptySession reads the session and foreground group whose controlling
// terminal p's slave is (TIOCGSID and TIOCGPGRP on the master answer for
// the slave whoever asks), and checks that restore can give them: the
// session's leader in the tree, every process of it with this terminal as
// its own (the kernel gives it to those forked after the leader took it),
// the group one of the tree's.
func ptySession(p *ptyPair, s *ptyState, stats map[int]*procfs.Stat) error {
	sid, err := unix.IoctlGetInt(p.master, unix.TIOCGSID)
	if errors.Is(err, unix.ENOTTY) {
		sid, err = 0, nil
	}
	if err != nil {
		return fmt.Errorf("TIOCGSID: %w", err)
	}
	pgrp, err := unix.IoctlGetInt(p.master, unix.TIOCGPGRP)
	if err != nil {
		return fmt.Errorf("TIOCGPGRP: %w", err)
	}
	rdev := p.slaveSt.Rdev
	if sid == 0 {
		for pid, st := range stats {
			if uint64(st.TtyNr) == rdev {
				return fmt.Errorf("process %d has it as its controlling terminal, but it is no session's: %w", pid, errs.ErrNotSupported)
			}
		}
		return nil
	}
	if l := stats[sid]; l == nil || l.Session != sid {
		return fmt.Errorf("the controlling terminal of session %d, whose leader is not in the tree: %w", sid, errs.ErrNotSupported)
	}
	fg := pgrp == 0
	for pid, st := range stats {
		if st.Session != sid {
			if uint64(st.TtyNr) == rdev {
				return fmt.Errorf("process %d of session %d has it as its controlling terminal, which is session %d's: %w", pid, st.Session, sid, errs.ErrNotSupported)
			}
			continue
		}
		if uint64(st.TtyNr) != rdev {
			return fmt.Errorf("the controlling terminal of session %d, but process %d of that session has none (tty_nr %#x): it was forked before the leader took it, which restore cannot give: %w", sid, pid, st.TtyNr, errs.ErrNotSupported)
		}
		fg = fg || st.Pgrp == pgrp
	}
	if !fg {
		return fmt.Errorf("its foreground process group %d has no process in the tree: %w", pgrp, errs.ErrNotSupported)
	}
	s.sid, s.pgrp = sid, pgrp
	return nil
}

// ptyQueues are the bytes a pty's sides have not read.
type ptyQueues struct {
	// toMaster is what the slave wrote and the master has not read.
	toMaster []byte
	// toSlave is what the master wrote and the slave has not read, as its
	// line discipline holds it: lines, then the unfinished line.
	toSlave []inputSeg
}

// inputSeg is a line of a terminal's input queue, or (end 0, eof false)
// its unfinished line or, not canonical, the whole queue.
type inputSeg struct {
	data []byte
	end  byte // the line's last character: '\n', VEOL or VEOL2
	eof  bool // the line was ended by the EOF character, which the queue does not keep
}

// withFlags runs fn with the file status flags of fd's open file
// description set to add more, then sets them back.
func withFlags(fd, add int, fn func() error) error {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if fl&add != add {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|add); err != nil {
			return err
		}
		defer unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	}
	return fn()
}

// maxReads bounds the reads of one queue (a canonical queue of 4 KiB
// holds at most that many lines).
const maxReads = 1 << 13

// readChunks reads fd, non-blocking, until it has nothing more, one read
// (a line, on a canonical terminal) per chunk.
func readChunks(fd int) ([][]byte, error) {
	var out [][]byte
	err := withFlags(fd, unix.O_NONBLOCK, func() error {
		buf := make([]byte, 8192)
		for i := 0; i < maxReads; i++ {
			n, err := unix.Read(fd, buf)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return nil
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				return err
			}
			out = append(out, bytes.Clone(buf[:n]))
		}
		return errors.New("the queue does not run dry")
	})
	return out, err
}

// readQueues reads both queues of a pty (see the top of this file). Once
// anything was read it returns the queues, even with an error, for refill.
func readQueues(m, s int, t *unix.Termios) (*ptyQueues, error) {
	q := &ptyQueues{}
	ms, err := readChunks(m)
	if err != nil {
		return nil, fmt.Errorf("read what its master has not: %w", err)
	}
	q.toMaster = bytes.Join(ms, nil)
	ss, err := readChunks(s)
	if err != nil {
		return q, fmt.Errorf("read what its slave has not: %w", err)
	}
	if t.Lflag&unix.ICANON == 0 {
		if b := bytes.Join(ss, nil); len(b) > 0 {
			q.toSlave = []inputSeg{{data: b}}
		}
		return q, nil
	}
	for _, l := range ss {
		seg := inputSeg{data: l}
		if n := len(l); n > 0 && isLineEnd(t, l[n-1]) {
			seg = inputSeg{data: l[:n-1], end: l[n-1]}
		} else {
			seg.eof = true
		}
		q.toSlave = append(q.toSlave, seg)
	}
	// The unfinished line shows only to a non-canonical read: with the
	// lines gone, switching ICANON off and on again changes nothing.
	raw := *t
	raw.Lflag &^= unix.ICANON
	if err := unix.IoctlSetTermios(m, unix.TCSETS, &raw); err != nil {
		return q, err
	}
	tail, err := readChunks(s)
	if serr := unix.IoctlSetTermios(m, unix.TCSETS, t); err == nil {
		err = serr
	}
	if b := bytes.Join(tail, nil); len(b) > 0 {
		q.toSlave = append(q.toSlave, inputSeg{data: b})
	}
	return q, err
}

// isLineEnd says whether c ends a line of canonical input under t.
func isLineEnd(t *unix.Termios, c byte) bool {
	return c == '\n' || (c != 0 && c == t.Cc[unix.VEOL]) || (c != 0 && c == t.Cc[unix.VEOL2] && t.Lflag&unix.IEXTEN != 0)
}

// representable refuses a slave queue that tty-data.img, plain bytes,
// cannot hold: a line ended by EOF, a line end inside a line.
func (q *ptyQueues) representable(t *unix.Termios) error {
	if t.Lflag&unix.ICANON == 0 {
		return nil
	}
	for _, s := range q.toSlave {
		if s.eof {
			return fmt.Errorf("its slave has an unread line ended by the end-of-file character, which tty-data.img cannot hold: %w", errs.ErrNotSupported)
		}
		for _, c := range s.data {
			if isLineEnd(t, c) {
				return fmt.Errorf("its slave has an unread line holding a quoted line end (%#x), which tty-data.img cannot hold: %w", c, errs.ErrNotSupported)
			}
		}
	}
	return nil
}

// slaveBytes is the slave's queue as tty-data.img holds it.
func (q *ptyQueues) slaveBytes() []byte {
	var b []byte
	for _, s := range q.toSlave {
		b = append(b, s.data...)
		if s.end != 0 {
			b = append(b, s.end)
		}
	}
	return b
}

// splitInput reads tty-data.img's bytes of a slave queue back into lines.
func splitInput(t *unix.Termios, b []byte) []inputSeg {
	if len(b) == 0 {
		return nil
	}
	if t.Lflag&unix.ICANON == 0 {
		return []inputSeg{{data: b}}
	}
	var out []inputSeg
	start := 0
	for i, c := range b {
		if isLineEnd(t, c) {
			out = append(out, inputSeg{data: b[start:i], end: c})
			start = i + 1
		}
	}
	if start < len(b) {
		out = append(out, inputSeg{data: b[start:]})
	}
	return out
}

// lnextChoices are characters refill may quote with: ^V first.
var lnextChoices = []byte{0x16, 0x17, 0x18, 0x19, 0x1a}

// inputTermios are the termios refill writes a slave's queue under, from
// the slave's own t: no signal, no flow control, no translation, no
// output processing, echo raw and on; canonical (and EXTPROC) as t, so
// that switching to them changes nothing in the queue; the line ends and
// EOF as t, every other special character off but LNEXT.
func inputTermios(t *unix.Termios) (w unix.Termios, lnext, eof byte) {
	w = *t
	w.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.IGNPAR | unix.PARMRK | unix.INPCK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IUCLC | unix.IXON | unix.IXANY | unix.IXOFF | unix.IMAXBEL
	w.Oflag &^= unix.OPOST
	w.Lflag &^= unix.ISIG | unix.ECHOE | unix.ECHOK | unix.ECHONL | unix.ECHOCTL | unix.ECHOPRT | unix.ECHOKE | unix.FLUSHO | unix.PENDIN | unix.TOSTOP | unix.XCASE | unix.NOFLSH
	w.Lflag |= unix.ECHO
	for _, i := range []int{unix.VINTR, unix.VQUIT, unix.VERASE, unix.VKILL, unix.VSTART, unix.VSTOP, unix.VSUSP, unix.VREPRINT, unix.VDISCARD, unix.VWERASE, unix.VLNEXT, unix.VSWTC} {
		w.Cc[i] = 0
	}
	if t.Lflag&unix.ICANON == 0 {
		w.Lflag &^= unix.IEXTEN
		return w, 0, 0
	}
	w.Lflag |= unix.IEXTEN
	if t.Lflag&unix.IEXTEN == 0 {
		w.Cc[unix.VEOL2] = 0 // not a line end for t: IEXTEN gives it that meaning
	}
	special := func(c byte) bool {
		return c == '\n' || c == w.Cc[unix.VEOL] || c == w.Cc[unix.VEOL2] || c == w.Cc[unix.VEOF]
	}
	eof = t.Cc[unix.VEOF]
	if eof == 0 || eof == '\n' || eof == w.Cc[unix.VEOL] || eof == w.Cc[unix.VEOL2] {
		eof = 4 // ^D
	}
	w.Cc[unix.VEOF] = eof
	for _, c := range lnextChoices {
		if !special(c) {
			lnext = c
			break
		}
	}
	w.Cc[unix.VLNEXT] = lnext
	return w, lnext, eof
}

// encodeInput is what refill writes to the master for segs, and how many
// bytes the slave echoes of it.
func encodeInput(w *unix.Termios, lnext, eof byte, segs []inputSeg) (out []byte, echoes int) {
	canon := w.Lflag&unix.ICANON != 0
	for _, s := range segs {
		for _, c := range s.data {
			if canon && (c == '\n' || c == lnext || c == eof || (c != 0 && (c == w.Cc[unix.VEOL] || c == w.Cc[unix.VEOL2]))) {
				out = append(out, lnext)
			}
			out = append(out, c)
			echoes++
		}
		if s.end != 0 {
			out = append(out, s.end)
			echoes++
		}
		if s.eof {
			out = append(out, eof)
		}
	}
	return out, echoes
}

// refillTimeout bounds the wait for a line discipline to take bytes.
const refillTimeout = 5 * time.Second

// refill puts q back into the pty of master m and slave s (cryo's fds on
// them), and leaves the slave with termios t and locked termios lt (see
// the top of this file). The master is not in packet mode.
func refill(m, s int, t, lt *unix.Termios, q *ptyQueues) error {
	if len(q.toSlave) == 0 && len(q.toMaster) == 0 {
		return nil
	}
	// Locked termios bits would keep refill's termios from taking.
	var none unix.Termios
	if *lt != none {
		if err := unix.IoctlSetTermios(m, unix.TIOCSLCKTRMIOS, &none); err != nil {
			return fmt.Errorf("unlock its termios: %w", err)
		}
		defer unix.IoctlSetTermios(m, unix.TIOCSLCKTRMIOS, lt)
	}
	if len(q.toSlave) > 0 {
		w, lnext, eof := inputTermios(t)
		if err := unix.IoctlSetTermios(m, unix.TCSETS, &w); err != nil {
			return err
		}
		b, echoes := encodeInput(&w, lnext, eof, q.toSlave)
		err := writeAll(m, b)
		if err == nil {
			err = dropEcho(m, echoes)
		}
		if serr := unix.IoctlSetTermios(m, unix.TCSETS, t); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("its slave's input: %w", err)
		}
	}
	if len(q.toMaster) > 0 {
		w := *t
		w.Oflag &^= unix.OPOST
		if err := unix.IoctlSetTermios(m, unix.TCSETS, &w); err != nil {
			return err
		}
		err := writeAll(s, q.toMaster)
		if serr := unix.IoctlSetTermios(m, unix.TCSETS, t); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("its master's input: %w", err)
		}
	}
	return nil
}

// writeAll writes b to a terminal fd, non-blocking, waiting (bounded) for
// room.
func writeAll(fd int, b []byte) error {
	return withFlags(fd, unix.O_NONBLOCK, func() error {
		deadline := time.Now().Add(refillTimeout)
		for len(b) > 0 {
			n, err := unix.Write(fd, b)
			if n > 0 {
				b = b[n:]
			}
			switch {
			case err == nil || errors.Is(err, unix.EINTR):
			case errors.Is(err, unix.EAGAIN):
				if time.Now().After(deadline) {
					return fmt.Errorf("%d bytes not taken in %v (output stopped?)", len(b), refillTimeout)
				}
				unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, 10)
			default:
				return err
			}
		}
		return nil
	})
}

// dropEcho waits until the master m holds n echoed bytes, the sign that
// the slave took everything written before them, and reads them away.
func dropEcho(m, n int) error {
	deadline := time.Now().Add(refillTimeout)
	for {
		k, err := unix.IoctlGetInt(m, unix.TIOCINQ)
		if err != nil {
			return err
		}
		if k >= n {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the slave echoed %d of %d bytes in %v (output stopped?)", k, n, refillTimeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return withFlags(m, unix.O_NONBLOCK, func() error {
		buf := make([]byte, n+1)
		for n > 0 {
			k, err := unix.Read(m, buf[:n])
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read the echo back: %w", err)
			}
			n -= k
		}
		return nil
	})
}

// record writes what the dump read of p into its file entries and the
// tty-info and tty-data entries.
func (td *ttyDump) record(d *Dumper, p *ptyPair, s *ptyState) {
	mk := func(id uint32, typ tty.TtyType, rdev, dev uint64, excl bool) *tty.TtyInfoEntry {
		e := &tty.TtyInfoEntry{
			Id: proto.Uint32(id), Type: typ.Enum(),
			Locked: proto.Bool(s.isLocked), Exclusive: proto.Bool(excl), PacketMode: proto.Bool(s.packet),
			Sid: proto.Uint32(uint32(s.sid)), Pgrp: proto.Uint32(uint32(s.pgrp)),
			Rdev: proto.Uint32(uint32(rdev)), Dev: proto.Uint32(uint32(dev)),
			Termios: termiosEntry(&s.t), TermiosLocked: termiosEntry(&s.locked),
			Winsize: &tty.WinsizeEntry{WsRow: proto.Uint32(uint32(s.ws.Row)), WsCol: proto.Uint32(uint32(s.ws.Col)),
				WsXpixel: proto.Uint32(uint32(s.ws.Xpixel)), WsYpixel: proto.Uint32(uint32(s.ws.Ypixel))},
			Uid: proto.Uint32(p.slaveSt.Uid), Gid: proto.Uint32(p.slaveSt.Gid),
		}
		if typ == tty.TtyType_PTY {
			e.Pty = &tty.TtyPtyEntry{Index: proto.Uint32(uint32(p.index))}
		}
		return e
	}
	slaveID, masterID := uint32(p.index)<<1, uint32(p.index)<<1|1
	td.infos = append(td.infos,
		mk(masterID, tty.TtyType_PTY, p.masterSt.Rdev, p.masterSt.Dev, s.mexcl),
		mk(slaveID, tty.TtyType_PTY, p.slaveSt.Rdev, p.slaveSt.Dev, s.sexcl))
	if p.ctty && !td.hasCtty() {
		td.infos = append(td.infos, mk(cttyInfoID, tty.TtyType_CTTY, unix.Mkdev(ttyMajorAux, ttyMinorTTY), p.slaveSt.Dev, false))
	}
	if len(s.q.toMaster) > 0 {
		td.data = append(td.data, &tty.TtyDataEntry{TtyId: proto.Uint32(masterID), Data: s.q.toMaster})
	}
	if b := s.q.slaveBytes(); len(b) > 0 {
		td.data = append(td.data, &tty.TtyDataEntry{TtyId: proto.Uint32(slaveID), Data: b})
	}
	// The paths, and the slave node's mode, in regular file entries the
	// tty entries name (regf_id), as CRIU writes them.
	mreg := d.Add(regEntry(p.masterLink, p.masterFile.GetTty().GetFlags(), 0, &p.masterSt))
	p.masterFile.Tty.RegfId = proto.Uint32(mreg)
	sreg := d.Add(regEntry(p.slaveLink, unix.O_RDWR, 0, &p.slaveSt))
	for _, tf := range td.files {
		if tf.index == p.index && !tf.ctty && tf.e.GetTty() != nil {
			tf.e.Tty.RegfId = proto.Uint32(sreg)
		}
	}
}

func (td *ttyDump) hasCtty() bool {
	for _, e := range td.infos {
		if e.GetId() == cttyInfoID {
			return true
		}
	}
	return false
}

func termiosEntry(t *unix.Termios) *tty.TermiosEntry {
	cc := make([]uint32, len(t.Cc))
	for i, c := range t.Cc {
		cc[i] = uint32(c)
	}
	return &tty.TermiosEntry{CIflag: proto.Uint32(t.Iflag), COflag: proto.Uint32(t.Oflag), CCflag: proto.Uint32(t.Cflag),
		CLflag: proto.Uint32(t.Lflag), CLine: proto.Uint32(uint32(t.Line)), CIspeed: proto.Uint32(t.Ispeed), COspeed: proto.Uint32(t.Ospeed), CCc: cc}
}

func termiosOf(e *tty.TermiosEntry) (unix.Termios, error) {
	var t unix.Termios
	if e == nil || len(e.GetCCc()) < len(t.Cc) {
		return t, corrupt("termios with %d control characters", len(e.GetCCc()))
	}
	t.Iflag, t.Oflag, t.Cflag, t.Lflag = e.GetCIflag(), e.GetCOflag(), e.GetCCflag(), e.GetCLflag()
	t.Line, t.Ispeed, t.Ospeed = uint8(e.GetCLine()), e.GetCIspeed(), e.GetCOspeed()
	for i := range t.Cc {
		t.Cc[i] = uint8(e.GetCCc()[i])
	}
	return t, nil
}

// writeSide writes tty-info.img and tty-data.img.
func (td *ttyDump) writeSide(_ *Dumper, s *Side) error {
	if len(td.infos) == 0 {
		return nil
	}
	msgs := make([]proto.Message, len(td.infos))
	for i, e := range td.infos {
		msgs[i] = e
	}
	if err := imageset.Write(s.Dir, imageset.TtyInfo, msgs...); err != nil {
		return err
	}
	if len(td.data) == 0 {
		return nil
	}
	msgs = msgs[:0]
	for _, e := range td.data {
		msgs = append(msgs, e)
	}
	return imageset.Write(s.Dir, imageset.TtyData, msgs...)
}

// ptyRestore is one pty of the image, as restore makes it.
type ptyRestore struct {
	index                 int
	master, slave         *tty.TtyInfoEntry
	masterPath, slavePath string
	masterFlags           uint32
	mode                  uint32 // of the slave's node; 0: not in the image
	q                     ptyQueues
	hung                  bool // its slave hung up: the master closed once the tree has its fds
	// Once made: the process that made it holds the master and a slave
	// fd, parked, until the tree has its fds; mc and sc are cryo's copies.
	pid    int
	m, s   uint64
	mc, sc int
}

// maxTtyData bounds one tty-data entry as read back.
const maxTtyData = 1 << 20

func (to *ttyOpen) loadSide(r *Restorer) error {
	to.infos, to.data, to.bySid = map[uint32]*tty.TtyInfoEntry{}, map[uint32][]byte{}, map[int]*ptyRestore{}
	dir := r.set.Dir
	if !dir.Has(imageset.TtyInfo.Name) {
		for _, f := range r.set.Files {
			if f.GetTty() != nil {
				return corrupt("file %d is a terminal, and the image has no %s", f.GetId(), imageset.TtyInfo.Name)
			}
		}
		return nil
	}
	infos, err := imageset.ReadAll(dir, imageset.TtyInfo, func() *tty.TtyInfoEntry { return &tty.TtyInfoEntry{} })
	if err != nil {
		return err
	}
	for _, e := range infos {
		to.infos[e.GetId()] = e
	}
	if dir.Has(imageset.TtyData.Name) {
		ds, err := imageset.ReadAll(dir, imageset.TtyData, func() *tty.TtyDataEntry { return &tty.TtyDataEntry{} })
		if err != nil {
			return err
		}
		for _, e := range ds {
			if len(e.GetData()) > maxTtyData {
				return &image.FormatError{File: imageset.TtyData.Name, Offset: -1, Err: fmt.Errorf("%d bytes queued on a terminal: %w", len(e.GetData()), image.ErrImageCorrupt)}
			}
			to.data[e.GetTtyId()] = e.GetData()
		}
	}
	for _, f := range r.set.Files {
		t := f.GetTty()
		if t == nil || t.GetTtyInfoId() == cttyInfoID {
			continue
		}
		idx := int(t.GetTtyInfoId() >> 1)
		pr := to.ptys[idx]
		if pr == nil {
			pr = &ptyRestore{index: idx, masterPath: "/dev/ptmx", slavePath: "/dev/pts/" + strconv.Itoa(idx), mc: -1, sc: -1}
			to.ptys[idx] = pr
		}
		reg := r.set.Files[t.GetRegfId()].GetReg()
		if t.GetTtyInfoId()&1 == 1 {
			pr.masterFlags = t.GetFlags()
			if reg != nil {
				pr.masterPath = reg.GetName()
			}
		} else if reg != nil {
			pr.slavePath, pr.mode = reg.GetName(), reg.GetMode()
		}
	}
	for _, pr := range to.ptys {
		if pr.mode != 0 {
			continue
		}
		// A slave no fd holds (closed): its node's entry, found by name.
		for _, f := range r.set.Files {
			if reg := f.GetReg(); f.GetType() == fdinfo.FdTypes_REG && reg.GetName() == pr.slavePath && reg.GetMode()&unix.S_IFMT == unix.S_IFCHR {
				pr.mode = reg.GetMode()
			}
		}
	}
	for idx, pr := range to.ptys {
		pr.master, pr.slave = to.infos[uint32(idx)<<1|1], to.infos[uint32(idx)<<1]
		if pr.slave != nil && pr.slave.GetTermios() == nil && pr.master == nil {
			// Hung up: made, its slave fds opened, and its master closed.
			pr.hung = true
			if _, err := os.Lstat(pr.slavePath); err == nil {
				return fmt.Errorf("pty slave %s (hung up): index taken at restore (this machine has a terminal of that name): cryo cannot choose another", pr.slavePath)
			}
			continue
		}
		if pr.master == nil || pr.slave == nil || pr.slave.GetTermios() == nil {
			return corrupt("pseudo-terminal %d without the tty-info entries of both its sides", idx)
		}
		t, err := termiosOf(pr.slave.GetTermios())
		if err != nil {
			return err
		}
		pr.q.toMaster = to.data[uint32(idx)<<1|1]
		pr.q.toSlave = splitInput(&t, to.data[uint32(idx)<<1])
		if sid := int(pr.master.GetSid()); sid != 0 {
			to.bySid[sid] = pr
		}
		// The index is the slave's name: taken, it cannot be had.
		if _, err := os.Lstat(pr.slavePath); err == nil {
			return fmt.Errorf("pty slave %s: index taken at restore (this machine has a terminal of that name): cryo cannot choose another, programs see the name", pr.slavePath)
		}
	}
	return nil
}

// maxPtyOpens bounds the masters restore holds while it looks for an index.
const maxPtyOpens = 4096

// make makes pty pr in p: the master at its index, unlocked, a slave fd,
// both parked, and cryo's copies set up as the image has them.
func (to *ttyOpen) make(r *Restorer, p Proc, pr *ptyRestore) (err error) {
	r.seen(p)
	var held []uint64
	defer func() {
		for _, fd := range held {
			p.Call("close", unix.SYS_CLOSE, fd)
		}
	}()
	var m uint64
	for {
		s, err := p.Str(pr.masterPath)
		if err != nil {
			return err
		}
		fd, err := p.Call("open "+pr.masterPath, unix.SYS_OPENAT, atFdcwd, s, uint64(pr.masterFlags|unix.O_NOCTTY|unix.O_CLOEXEC), 0)
		if err != nil {
			return err
		}
		held = append(held, fd)
		a, err := p.Arg(make([]byte, 4))
		if err != nil {
			return err
		}
		if _, err := p.Call("ioctl(TIOCGPTN)", unix.SYS_IOCTL, fd, unix.TIOCGPTN, a); err != nil {
			return err
		}
		b, err := p.Out(a, 4)
		if err != nil {
			return err
		}
		got := int(binary.LittleEndian.Uint32(b))
		if got == pr.index {
			held = held[:len(held)-1]
			m = fd
			break
		}
		if got > pr.index || len(held) >= maxPtyOpens {
			return fmt.Errorf("pty slave %s: index taken at restore (%s gave index %d next): cryo cannot choose another, programs see the name", pr.slavePath, pr.masterPath, got)
		}
	}
	if pr.m, err = r.Park(p, m); err != nil {
		return err
	}
	pr.pid = p.Pid()
	if pr.mc, err = kabi.GetFd(p.Pid(), int(pr.m)); err != nil {
		return err
	}
	if err := unix.IoctlSetPointerInt(pr.mc, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlock %s: %w", pr.slavePath, err)
	}
	sp, err := p.Str(pr.slavePath)
	if err != nil {
		return err
	}
	sfd, err := p.Call("open "+pr.slavePath, unix.SYS_OPENAT, atFdcwd, sp, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if pr.s, err = r.Park(p, sfd); err != nil {
		return err
	}
	if pr.sc, err = kabi.GetFd(p.Pid(), int(pr.s)); err != nil {
		return err
	}
	if pr.hung {
		return nil // nothing of a hung-up terminal shows
	}
	return pr.configure()
}

// configure gives the made pty what the image has: the slave node's owner
// and mode, its queues, termios, locked termios, window size and packet
// mode. Locking and exclusive mode wait for treeDone: the tree's slave
// fds are opened after.
func (pr *ptyRestore) configure() error {
	sl := pr.slave
	if err := unix.Fchown(pr.sc, int(sl.GetUid()), int(sl.GetGid())); err != nil {
		return fmt.Errorf("%s: chown: %w", pr.slavePath, err)
	}
	if pr.mode != 0 {
		if err := unix.Fchmod(pr.sc, pr.mode&0o7777); err != nil {
			return fmt.Errorf("%s: chmod: %w", pr.slavePath, err)
		}
	}
	t, err := termiosOf(sl.GetTermios())
	if err != nil {
		return err
	}
	lt, err := termiosOf(sl.GetTermiosLocked())
	if err != nil {
		return err
	}
	if err := unix.IoctlSetTermios(pr.mc, unix.TCSETS, &t); err != nil {
		return fmt.Errorf("%s: TCSETS: %w", pr.slavePath, err)
	}
	var none unix.Termios
	if err := refill(pr.mc, pr.sc, &t, &none, &pr.q); err != nil {
		return fmt.Errorf("%s: refill: %w", pr.slavePath, err)
	}
	// A new pty has no locked bits; setting some takes CAP_SYS_ADMIN.
	if lt != none {
		if err := unix.IoctlSetTermios(pr.mc, unix.TIOCSLCKTRMIOS, &lt); err != nil {
			return fmt.Errorf("%s: TIOCSLCKTRMIOS: %w", pr.slavePath, err)
		}
	}
	ws := sl.GetWinsize()
	if err := unix.IoctlSetWinsize(pr.mc, unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(ws.GetWsRow()), Col: uint16(ws.GetWsCol()),
		Xpixel: uint16(ws.GetWsXpixel()), Ypixel: uint16(ws.GetWsYpixel())}); err != nil {
		return fmt.Errorf("%s: TIOCSWINSZ: %w", pr.slavePath, err)
	}
	if pr.master.GetPacketMode() {
		if err := unix.IoctlSetPointerInt(pr.mc, unix.TIOCPKT, 1); err != nil {
			return fmt.Errorf("%s: TIOCPKT: %w", pr.slavePath, err)
		}
	}
	return nil
}

// openPty opens the terminal of tty file entry t in p.
func (to *ttyOpen) openPty(r *Restorer, p Proc, t *tty.TtyFileEntry) (uint64, error) {
	id := t.GetTtyInfoId()
	flags := uint64(t.GetFlags() | unix.O_NOCTTY | unix.O_CLOEXEC)
	if id == cttyInfoID {
		s, err := p.Str("/dev/tty")
		if err != nil {
			return 0, err
		}
		return p.Call("open /dev/tty", unix.SYS_OPENAT, atFdcwd, s, flags, 0)
	}
	pr := to.ptys[int(id>>1)]
	if pr == nil {
		return 0, corrupt("terminal file %d on tty info %d, which tty-info.img lacks", t.GetId(), id)
	}
	if pr.pid == 0 {
		if err := to.make(r, p, pr); err != nil {
			return 0, err
		}
	}
	if id&1 == 1 {
		if pr.pid == p.Pid() {
			return p.Call("dup pty master", unix.SYS_FCNTL, pr.m, unix.F_DUPFD_CLOEXEC, 0)
		}
		return r.Take(p, Owner{Pid: pr.pid, Fd: pr.m})
	}
	if t.GetFlags()&oLargefile == 0 {
		// Opened through the master (TIOCGPTPEER, as glibc's openpty
		// does): open(2) would add O_LARGEFILE, which fcntl cannot take
		// away.
		m, taken := pr.m, pr.pid != p.Pid()
		if taken {
			var err error
			if m, err = r.Take(p, Owner{Pid: pr.pid, Fd: pr.m}); err != nil {
				return 0, err
			}
		}
		// Not O_CLOEXEC: the ioctl keeps it in the file's flags, where
		// fdinfo shows it for good.
		fd, err := p.Call("ioctl(TIOCGPTPEER) "+pr.slavePath, unix.SYS_IOCTL, m, unix.TIOCGPTPEER, flags&^unix.O_CLOEXEC)
		if taken {
			p.Call("close", unix.SYS_CLOSE, m)
		}
		return fd, err
	}
	s, err := p.Str(pr.slavePath)
	if err != nil {
		return 0, err
	}
	return p.Call("open "+pr.slavePath, unix.SYS_OPENAT, atFdcwd, s, flags, 0)
}

// oLargefile is the kernel's O_LARGEFILE, which open(2) adds on 64-bit
// machines (x86-64's headers call it 0).
const oLargefile = 0o100000

// ControllingTerminal makes, in p, the pty whose slave is the controlling
// terminal of p's session, if p leads one that has it, and makes it p's:
// called once p's memory is in, before it forks (the processes of its
// session get the terminal from it at fork).
func (r *Restorer) ControllingTerminal(p Proc) error {
	to := restoreHalf[*ttyOpen](r)
	pr := to.bySid[p.Pid()]
	if pr == nil {
		return nil
	}
	if err := to.make(r, p, pr); err != nil {
		return err
	}
	if _, err := p.Call("ioctl(TIOCSCTTY) "+pr.slavePath, unix.SYS_IOCTL, pr.s, unix.TIOCSCTTY, 0); err != nil {
		return err
	}
	return nil
}

// Foreground gives each session's terminal its foreground process group,
// once the groups exist: the session leader asks (TIOCSPGRP wants the
// caller's own terminal).
func (r *Restorer) Foreground() error {
	to := restoreHalf[*ttyOpen](r)
	for sid, pr := range to.bySid {
		pgrp := pr.master.GetPgrp()
		p := r.proc(sid)
		if pgrp == 0 || p == nil || pr.pid != sid {
			continue
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], pgrp)
		a, err := p.Arg(b[:])
		if err != nil {
			return err
		}
		if _, err := p.Call(fmt.Sprintf("ioctl(TIOCSPGRP %d) %s", pgrp, pr.slavePath), unix.SYS_IOCTL, pr.s, unix.TIOCSPGRP, a); err != nil {
			return err
		}
	}
	return nil
}

// treeDone locks the ptys and makes them exclusive as they were, now that
// every slave fd is open, and closes what restore held of them.
func (to *ttyOpen) treeDone(r *Restorer) error {
	for _, pr := range to.ptys {
		if pr.pid == 0 || pr.hung {
			continue
		}
		for _, x := range []struct {
			on  bool
			fd  int
			req uint
			arg int
		}{{pr.slave.GetExclusive(), pr.sc, unix.TIOCEXCL, 0}, {pr.master.GetExclusive(), pr.mc, unix.TIOCEXCL, 0}, {pr.master.GetLocked(), pr.mc, unix.TIOCSPTLCK, 1}} {
			if !x.on {
				continue
			}
			var err error
			if x.req == unix.TIOCSPTLCK {
				err = unix.IoctlSetPointerInt(x.fd, x.req, x.arg)
			} else {
				err = unix.IoctlSetInt(x.fd, x.req, x.arg)
			}
			if err != nil {
				return fmt.Errorf("%s: ioctl %#x: %w", pr.slavePath, x.req, err)
			}
		}
	}
	for _, pr := range to.ptys {
		if p := r.proc(pr.pid); pr.pid != 0 && p != nil {
			for _, fd := range []uint64{pr.m, pr.s} {
				if _, err := p.Call("close", unix.SYS_CLOSE, fd); err != nil {
					return err
				}
			}
		}
	}
	// The last close of a hung-up pty's master (cryo's copy) hangs its
	// slave fds up, and takes its name away, as the image has them.
	to.closeCopies()
	return nil
}

// closeCopies closes cryo's own fds on the ptys made.
func (to *ttyOpen) closeCopies() {
	for _, pr := range to.ptys {
		for _, fd := range []*int{&pr.mc, &pr.sc} {
			if *fd >= 0 {
				unix.Close(*fd)
				*fd = -1
			}
		}
	}
}

package dump

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/keeper"
)

// startKeeper hands the tree's ends of pipes whose other end an outside
// process still holds, and its UNIX sockets connected to a peer outside
// it, to a keeper (package keeper), before the tree is killed: the outside process then sees a program that pauses rather than
// one that closed its pipe, and the restore gets the same pipe back. A
// pipe nobody outside holds any more needs no keeping: its restore makes
// it again, with its data, and no other end. A keeper that cannot be
// started is no reason to fail the dump of pipes: the outside process
// then sees the ends close, as with CRIU, and the log says so; a socket,
// which the restore could not make again, fails it.
//
// The keeper also guards the tree's TCP connections while the dump has
// them in repair mode: were the dump to die before it is done, the keeper
// takes repair mode off them and removes the network lock, and the
// connections carry on (with --leave-running too, where it keeps nothing).
func (t *tree) startKeeper() error {
	if t.opts.Keeper == "" {
		return nil
	}
	var pipes []keeper.Pipe
	var guards []keeper.Guard
	defer func() {
		for _, p := range pipes {
			p.File.Close()
		}
		for _, g := range guards {
			g.File.Close()
		}
	}()
	for _, g := range t.files.TCPGuards() {
		cp, err := unix.FcntlInt(uintptr(g.Fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("a copy of a TCP connection for the keeper: %w", err)
		}
		guards = append(guards, keeper.Guard{File: os.NewFile(uintptr(cp), "tcp"), Pid: g.Pid, ReuseAddr: g.ReuseAddr})
	}
	outside := t.files.OutsideFiles()
	if t.opts.LeaveRunning {
		outside = nil
	}
	for _, op := range outside {
		cp, err := kabi.GetFd(op.Pid, op.Fd)
		if err != nil {
			return fmt.Errorf("keep %s, whose other side is outside the tree: %w", op.Key, err)
		}
		f := os.NewFile(uintptr(cp), op.Key)
		if !op.Socket && !keeper.HasPeer(f) {
			f.Close()
			continue
		}
		pipes = append(pipes, keeper.Pipe{Key: op.Key, File: f})
	}
	if len(pipes) == 0 && len(guards) == 0 {
		return nil
	}
	k, err := keeper.Start(t.opts.Keeper, pipes, guards)
	if err != nil {
		for _, p := range pipes {
			if strings.HasPrefix(p.Key, "socket:") {
				// A socket cannot be made again without its peer.
				return fmt.Errorf("keep %s, connected to a peer outside the tree: %w", p.Key, err)
			}
		}
		t.log.Warn("no keeper: the pipes to the outside will close with the tree, and a dump that dies may leave its TCP connections in repair mode", "err", err)
		return nil
	}
	t.keeper = k
	for _, p := range pipes {
		t.kept = append(t.kept, p.Key)
	}
	if len(pipes) == 0 {
		t.keeperName = "" // nothing for a restore to claim
		t.log.Debug("TCP connections guarded by a keeper while in repair mode", "connections", len(guards))
		return nil
	}
	t.keeperName = k.Name
	t.log.Info("files whose other side is outside the tree kept until the restore", "keeper", k.Name, "files", t.kept)
	return nil
}

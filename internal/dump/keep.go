package dump

import (
	"fmt"
	"os"
	"strings"

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
func (t *tree) startKeeper() error {
	if t.opts.LeaveRunning || t.opts.Keeper == "" {
		return nil
	}
	var pipes []keeper.Pipe
	defer func() {
		for _, p := range pipes {
			p.File.Close()
		}
	}()
	for _, op := range t.files.OutsideFiles() {
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
	if len(pipes) == 0 {
		return nil
	}
	k, err := keeper.Start(t.opts.Keeper, pipes)
	if err != nil {
		for _, p := range pipes {
			if strings.HasPrefix(p.Key, "socket:") {
				// A socket cannot be made again without its peer.
				return fmt.Errorf("keep %s, connected to a peer outside the tree: %w", p.Key, err)
			}
		}
		t.log.Warn("the pipes to the outside will close with the tree", "err", err)
		return nil
	}
	t.keeper = k
	for _, p := range pipes {
		t.kept = append(t.kept, p.Key)
	}
	t.log.Info("files whose other side is outside the tree kept until the restore", "keeper", k.Name, "files", t.kept)
	return nil
}

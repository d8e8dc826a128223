package dump

import (
	"os"

	"github.com/cryo-project/cryo/internal/kabi"
	"github.com/cryo-project/cryo/internal/keeper"
)

// startKeeper hands the tree's ends of pipes whose other end an outside
// process still holds to a keeper (package keeper), before the tree is
// killed: the outside process then sees a program that pauses rather than
// one that closed its pipe, and the restore gets the same pipe back. A
// pipe nobody outside holds any more needs no keeping: its restore makes
// it again, with its data, and no other end. A keeper that cannot be
// started is no reason to fail the dump: the outside process then sees
// the ends close, as with CRIU, and the log says so.
func (t *tree) startKeeper() {
	if t.opts.LeaveRunning || t.opts.Keeper == "" {
		return
	}
	var pipes []keeper.Pipe
	defer func() {
		for _, p := range pipes {
			p.File.Close()
		}
	}()
	for _, op := range t.files.OutsidePipes() {
		cp, err := kabi.GetFd(op.Pid, op.Fd)
		if err != nil {
			t.log.Warn("cannot keep a pipe to the outside", "pipe", op.Key, "err", err)
			continue
		}
		f := os.NewFile(uintptr(cp), op.Key)
		if !keeper.HasPeer(f) {
			f.Close()
			continue
		}
		pipes = append(pipes, keeper.Pipe{Key: op.Key, File: f})
	}
	if len(pipes) == 0 {
		return
	}
	k, err := keeper.Start(t.opts.Keeper, pipes)
	if err != nil {
		t.log.Warn("the pipes to the outside will close with the tree", "err", err)
		return
	}
	t.keeper = k
	for _, p := range pipes {
		t.kept = append(t.kept, p.Key)
	}
	t.log.Info("pipes to the outside kept until the restore", "keeper", k.Name, "pipes", t.kept)
}

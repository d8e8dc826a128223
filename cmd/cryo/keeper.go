package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cryo-project/cryo/internal/keeper"
	"github.com/cryo-project/cryo/internal/netlock"
)

// keep-pipes is the keeper a dump starts for the tree's ends of pipes and
// sockets that have another end outside it, and to guard its TCP
// connections in repair mode (package keeper): fd 3 is its commit pipe,
// fds 4... the files, one per KEY.
func init() {
	root.AddCommand(&cobra.Command{
		Use:    keeper.Command + " NAME KEY...",
		Short:  "Hold a dumped tree's ends of pipes to the outside until its restore",
		Hidden: true,
		Args:   cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			commit := os.NewFile(3, "commit")
			var pipes []keeper.Pipe
			for i, key := range args[1:] {
				f := os.NewFile(uintptr(4+i), key)
				if f == nil {
					return fmt.Errorf("%s: fd %d is not open", keeper.Command, 4+i)
				}
				pipes = append(pipes, keeper.Pipe{Key: key, File: f})
			}
			if commit == nil {
				return fmt.Errorf("%s: no commit pipe", keeper.Command)
			}
			pipes, guards := keeper.Split(pipes)
			return keeper.Serve(args[0], commit, pipes, guards, func() { netlock.Sweep() })
		},
	})
}

// keeperExe is the cryo binary a dump runs as its pipes' keeper; "" keeps
// none.
func keeperExe() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return exe
}

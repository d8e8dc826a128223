package main

import (
	"github.com/spf13/cobra"

	"github.com/cryo-project/cryo/internal/inspect"
)

var (
	deletedPids []int
	deletedJSON bool
)

var deletedCmd = &cobra.Command{
	Use:   "deleted [--pid PID...] [--json]",
	Short: "List deleted files that processes still map or hold open",
	Long: `Deleted lists every file that has been deleted but is still held, mapped
(found through /proc/PID/map_files) or open (through /proc/PID/fd), by the
processes the caller may inspect (all of them, or those named with --pid). Each
file appears once, with its filesystem, original path, size, the space it
occupies (st_blocks) and which pids hold it and how. It then totals, per
filesystem, the space only these files hold, to compare with df. memfds and
shared anonymous memory are listed apart, as memory.

Sizing a file held only by a mapping needs CAP_CHECKPOINT_RESTORE or
CAP_SYS_ADMIN; without it such files are listed, counted as not measured, and
left out of the totals. No process is stopped or traced. The exit status is 0
when nothing is found.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		opts := inspect.DeletedOptions{}
		if cmd.Flags().Changed("pid") {
			opts.Pids = deletedPids
		}
		rep, err := inspect.Deleted(opts)
		if err != nil {
			return err
		}
		if deletedJSON {
			return inspect.WriteJSON(cmd.OutOrStdout(), rep)
		}
		return inspect.WriteDeletedText(cmd.OutOrStdout(), rep)
	},
}

func init() {
	deletedCmd.Flags().IntSliceVar(&deletedPids, "pid", nil, "scan only this process (repeatable, or comma-separated)")
	deletedCmd.Flags().BoolVar(&deletedJSON, "json", false, "print JSON instead of text")
	root.AddCommand(deletedCmd)
}

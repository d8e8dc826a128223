package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cryo-project/cryo/internal/inspect"
)

var mapsJSON bool

var mapsCmd = &cobra.Command{
	Use:   "maps PID [--json]",
	Short: "Show a process's memory mappings, their memory use and sharers",
	Long: `Maps lists the mappings of one process: address range, size, permissions,
what backs each (a file, deleted or not, anonymous memory, shared anonymous
memory, a memfd, or a special mapping), RSS, PSS, swap and VmFlags in words.
For shared mappings it names the other processes that map the same object,
found by comparing the device and inode behind /proc/PID/map_files. The
process is neither stopped nor traced.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		pid, err := strconv.Atoi(args[0])
		if err != nil || pid <= 0 {
			return fmt.Errorf("maps: %q is not a pid", args[0])
		}
		rep, err := inspect.Maps(pid, inspect.MapsOptions{})
		if err != nil {
			return err
		}
		if mapsJSON {
			return inspect.WriteJSON(cmd.OutOrStdout(), rep)
		}
		return inspect.WriteMapsText(cmd.OutOrStdout(), rep)
	},
}

func init() {
	mapsCmd.Flags().BoolVar(&mapsJSON, "json", false, "print JSON instead of text")
	root.AddCommand(mapsCmd)
}

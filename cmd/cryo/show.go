package main

import (
	"github.com/spf13/cobra"

	"github.com/cryo-project/cryo/internal/show"
)

var showJSON bool

var showCmd = &cobra.Command{
	Use:   "show DIR",
	Short: "Describe what an image directory holds",
	Long: `Show verifies an image directory's checksums and lists, for each process,
its threads (registers, blocked and pending signals), memory mappings (with the
pages dumped for each), file descriptors and signal handlers, then the dump's
own statistics. --json prints the same as JSON with stable field names.`,
	Args: cobra.ExactArgs(1),
	RunE: func(cmd *cobra.Command, args []string) error {
		img, err := show.Load(args[0])
		if err != nil {
			return err
		}
		if showJSON {
			return show.WriteJSON(cmd.OutOrStdout(), img)
		}
		return show.WriteText(cmd.OutOrStdout(), img)
	},
}

func init() {
	showCmd.Flags().BoolVar(&showJSON, "json", false, "print JSON instead of text")
	root.AddCommand(showCmd)
}

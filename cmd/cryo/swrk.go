package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cryo-project/cryo/internal/criurpc"
)

// swrk is CRIU's service worker: the caller (go-criu, runc, crun, Podman)
// starts `criu swrk FD` with FD one end of a SOCK_SEQPACKET pair and speaks
// CRIU's RPC on it. Installed or linked as `criu`, cryo takes those calls.
func init() {
	root.AddCommand(&cobra.Command{
		Use:    "swrk FD",
		Short:  "Serve CRIU's RPC on the socket FD (as `criu swrk`)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			fd, err := strconv.Atoi(args[0])
			if err != nil || fd < 0 {
				return fmt.Errorf("swrk: %q is not an fd", args[0])
			}
			conn := os.NewFile(uintptr(fd), "criu-rpc")
			if conn == nil {
				return fmt.Errorf("swrk: fd %d is not open", fd)
			}
			defer conn.Close()
			s := &criurpc.Server{Version: version, GitID: gitID(), OpenLog: openRPCLog}
			return s.Serve(conn)
		},
	})
}

// openRPCLog opens the log a request names, in dir, at CRIU's log level;
// with no name the log goes to stderr, as CRIU's swrk does.
func openRPCLog(dir, file string, level int) (*slog.Logger, func(), error) {
	o := logOptions{verbosity: level, file: file}
	return o.open(dir)
}

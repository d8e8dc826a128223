package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cryo-project/cryo/internal/dump"
	"github.com/cryo-project/cryo/internal/netlock"
)

func init() {
	var (
		opts    dump.Options
		log     logOptions
		actions actionScripts
		lock    string
	)
	cmd := &cobra.Command{
		Use:   "dump -t PID -D DIR",
		Short: "Checkpoint a running process into an image directory",
		Long: `Freeze every thread of PID, write its state into DIR as CRIU-format images,
and kill it (unless --leave-running). If the dump fails, the process is left
running exactly as it was.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Pid == 0 || opts.Dir == "" {
				return fmt.Errorf("dump needs -t PID and -D DIR")
			}
			var err error
			if opts.NetworkLock, err = netlock.ParseMethod(lock); err != nil {
				return err
			}
			ctx, worker := workerContext()
			if !worker {
				return supervise()
			}
			opts.Context = ctx
			l, closeLog, err := log.open(opts.Dir)
			if err != nil {
				return err
			}
			defer closeLog()
			opts.Log = l
			opts.Notify = actions.notify()
			opts.Keeper = keeperExe()
			pr := newProgress("dump")
			opts.Progress = pr.update
			st, err := dump.Run(opts)
			pr.finish()
			if err != nil {
				if log.file != "" { // on stderr the error is printed once, below
					l.Error("dump failed", "pid", opts.Pid, "err", err)
				}
				return fmt.Errorf("dump of %d: %w", opts.Pid, err)
			}
			l.Info("dump done", "pid", opts.Pid, "frozen", st.Frozen, "pages", st.PagesWritten, "vmas", st.VMAs, "threads", st.Threads,
				"tcp_connections", st.TCPConns, "network_lock_held", st.NetworkLock)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&opts.Pid, "tree", "t", 0, "pid of the process to dump")
	f.StringVarP(&opts.Dir, "images-dir", "D", "", "directory for the image files")
	f.BoolVarP(&opts.LeaveRunning, "leave-running", "R", false, "leave the process running after the dump")
	f.BoolVarP(&opts.ShellJob, "shell-job", "j", false, "allow stdio on a terminal (re-attached on restore)")
	f.BoolVarP(&opts.FileLocks, "file-locks", "l", false, "dump the file locks the tree holds (without it, a lock fails the dump)")
	f.Var(sizeValue{&opts.GhostLimit}, "ghost-limit", "largest deleted file whose contents go into the image (K, M, G suffixes); a larger one fails the dump (default: no limit; criu's is 1M)")
	f.BoolVar(&opts.TCPEstablished, "tcp-established", false, "dump established TCP connections, by TCP repair (without it, one fails the dump)")
	f.BoolVar(&opts.TCPClose, "tcp-close", false, "dump established TCP connections without their state: restore (with --tcp-close) brings them back aborted")
	f.StringVar(&lock, "network-lock", "nftables", "how the connections are held while dumped and until restored: nftables, iptables (nftables rules too) or skip")
	registerCompat(f, true)
	actions.register(f, &opts.Dir)
	log.register(f)
	root.AddCommand(cmd)
}

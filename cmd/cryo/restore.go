package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/files"
	"github.com/cryo-project/cryo/internal/netlock"
	"github.com/cryo-project/cryo/internal/restore"
)

func init() {
	var (
		opts    restore.Options
		log     logOptions
		actions actionScripts
		inherit []string
		pidfile string
		lock    string
	)
	cmd := &cobra.Command{
		Use:   "restore -D DIR",
		Short: "Restore a process from an image directory",
		Long: `Rebuild the process of DIR with its pid, threads, memory, registers, files and
signal state. Without -d, cryo waits for it and exits with its exit status.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Dir == "" {
				return fmt.Errorf("restore needs -D DIR")
			}
			var err error
			if opts.NetworkLock, err = netlock.ParseMethod(lock); err != nil {
				return err
			}
			l, closeLog, err := log.open(opts.Dir)
			if err != nil {
				return err
			}
			defer closeLog()
			opts.Log = l
			opts.Notify = withPidfile(actions.notify(), pidfile, opts.Dir)
			if opts.Inherit, err = inheritFds(inherit); err != nil {
				return err
			}
			pr := newProgress("restore")
			opts.Progress = pr.update
			res, err := restore.Run(opts)
			pr.finish()
			if err != nil {
				if log.file != "" { // on stderr the error is printed once, below
					l.Error("restore failed", "err", err)
				}
				return fmt.Errorf("restore from %s: %w", opts.Dir, err)
			}
			if opts.Detached {
				return nil
			}
			if res.Status != 0 {
				return &exitStatus{code: res.Status, err: fmt.Errorf("restored process %d exited with status %d", res.Pid, res.Status)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Dir, "images-dir", "D", "", "directory of the image files")
	f.BoolVarP(&opts.Detached, "restore-detached", "d", false, "return once the process runs, do not wait for it")
	f.BoolVarP(&opts.ShellJob, "shell-job", "j", false, "attach terminal fds to this terminal")
	f.BoolVar(&opts.Verify, "verify", false, "before the tree runs, compare what /proc shows of it with the dump's record; kill it on any difference")
	f.BoolVarP(&opts.FileLocks, "file-locks", "l", false, "take the image's file locks again (without it, an image with locks is refused)")
	f.StringVar(&pidfile, "pidfile", "", "write the restored root's pid to this file (relative to the image directory, as in criu)")
	f.StringArrayVar(&inherit, "inherit-fd", nil, "fd[N]:KEY: use cryo's fd N for the image's file KEY (e.g. pipe:[1234]) whose other end was outside the tree")
	f.BoolVar(&opts.TCPEstablished, "tcp-established", false, "restore the image's established TCP connections (without it or --tcp-close, an image with one is refused)")
	f.BoolVar(&opts.TCPClose, "tcp-close", false, "restore the image's established TCP connections aborted: the program's next call on one fails with ECONNABORTED")
	f.StringVar(&lock, "network-lock", "nftables", "how the restored connections are held until the tree runs: nftables, iptables (nftables rules too) or skip")
	registerCompat(f, false)
	actions.register(f, &opts.Dir)
	log.register(f)
	root.AddCommand(cmd)
}

// inheritFds opens criu's --inherit-fd arguments: fd[N]:KEY, N one of
// cryo's own fds.
func inheritFds(args []string) (map[string]*os.File, error) {
	out := map[string]*os.File{}
	for _, a := range args {
		n, key, err := files.ParseInheritFd(a)
		if err != nil {
			return nil, err
		}
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("--inherit-fd %s: fd %d of cryo: %w", a, n, err)
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("--inherit-fd: %s given twice", key)
		}
		out[key] = os.NewFile(uintptr(n), key)
	}
	return out, nil
}

// withPidfile adds criu's --pidfile to a restore's notifications: once the
// tree is whole, before it runs (pre-resume), the root's pid goes into
// path, relative to the image directory dir, so that a file that cannot
// be written fails the restore with nothing left running. An empty path
// adds nothing.
func withPidfile(notify func(string, int) error, path, dir string) func(string, int) error {
	if path == "" {
		return notify
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	return func(event string, pid int) error {
		if notify != nil {
			if err := notify(event, pid); err != nil {
				return err
			}
		}
		if event != "pre-resume" {
			return nil
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("--pidfile: %w", err)
		}
		return nil
	}
}

// Package criurpc serves CRIU's RPC (criu_req/criu_resp, go-criu's rpc
// types) on the socket `criu swrk FD` is given, so that the tools that
// drive CRIU — runc, crun, Podman, anything on go-criu — drive cryo: a
// request is decoded, its options checked and mapped onto dump.Options or
// restore.Options, and the answer sent back; the dump's and restore's
// notification points go to the caller as NOTIFY messages when it asks
// for them (notify_scripts), and each waits for the caller's reply.
//
// An option cryo does not handle is never ignored: a request that sets
// one to anything but its default fails, naming it.
//
// # Security
//
// The caller is trusted as much as the user it runs as: the images
// directory and work directory are the caller's own fds (images_dir_fd,
// work_dir_fd), reached through /proc/CALLER/fd, and the dump and
// restore run with cryo's own privileges, as `cryo dump` and `cryo
// restore` would for that user.
package criurpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/checkpoint-restore/go-criu/v8/rpc"

	"github.com/cryo-project/cryo/internal/dump"
	"github.com/cryo-project/cryo/internal/errs"
	"github.com/cryo-project/cryo/internal/feature"
	"github.com/cryo-project/cryo/internal/netlock"
	"github.com/cryo-project/cryo/internal/restore"
)

// Server holds what requests need beyond themselves.
type Server struct {
	// Version is cryo's own version and GitID its commit, for VERSION.
	Version, GitID string
	// OpenLog opens the log a request asks for (log_file, relative to
	// dir, at CRIU's log_level); it returns the logger and its closer.
	OpenLog func(dir, file string, level int) (*slog.Logger, func(), error)
}

// maxPacket bounds one request: CRIU's clients send a few hundred bytes.
const maxPacket = 1 << 20

// ErrOption marks a request that sets an option cryo does not handle.
var ErrOption = errors.New("option not handled by cryo")

// Serve answers the requests that arrive on conn, a SOCK_SEQPACKET
// socket, until the caller closes it or a request that ends the session
// (any but one with keep_open) is answered.
func (s *Server) Serve(conn *os.File) error {
	peer, err := unix.GetsockoptUcred(int(conn.Fd()), unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("criu rpc: the caller's credentials: %w", err)
	}
	c := &session{s: s, conn: conn, peer: int(peer.Pid)}
	for {
		req, err := c.recv()
		if err != nil {
			if errors.Is(err, errClosed) {
				return nil
			}
			return err
		}
		resp := c.handle(req)
		if err := c.send(resp); err != nil {
			return err
		}
		if !req.GetKeepOpen() {
			return nil
		}
	}
}

type session struct {
	s    *Server
	conn *os.File
	peer int // the caller's pid, whose fds the options name
}

var errClosed = errors.New("closed")

func (c *session) recv() (*rpc.CriuReq, error) {
	b := make([]byte, maxPacket)
	n, err := c.conn.Read(b)
	if err != nil || n == 0 {
		return nil, errClosed
	}
	req := &rpc.CriuReq{}
	if err := req.UnmarshalVT(b[:n]); err != nil {
		return nil, fmt.Errorf("criu rpc: a request that does not decode: %w", err)
	}
	return req, nil
}

func (c *session) send(resp *rpc.CriuResp) error {
	b, err := resp.MarshalVT()
	if err != nil {
		return err
	}
	_, err = c.conn.Write(b)
	return err
}

// handle answers one request; every failure becomes a response with
// success false and the error's text in cr_errmsg.
func (c *session) handle(req *rpc.CriuReq) *rpc.CriuResp {
	typ := req.GetType()
	resp := &rpc.CriuResp{Type: &typ, Success: ptr(true)}
	var err error
	switch typ {
	case rpc.CriuReqType_VERSION:
		resp.Version = c.version()
	case rpc.CriuReqType_CHECK:
		err = check()
	case rpc.CriuReqType_FEATURE_CHECK:
		// Incremental dumps (mem_track), lazy restore and the pidfd store
		// are not there yet: each asked for is answered no.
		resp.Features = &rpc.CriuFeatures{}
		if req.GetFeatures().MemTrack != nil {
			resp.Features.MemTrack = ptr(false)
		}
		if req.GetFeatures().LazyPages != nil {
			resp.Features.LazyPages = ptr(false)
		}
		if req.GetFeatures().PidfdStore != nil {
			resp.Features.PidfdStore = ptr(false)
		}
	case rpc.CriuReqType_DUMP:
		err = c.dump(req.GetOpts())
	case rpc.CriuReqType_RESTORE:
		var pid int
		pid, err = c.restore(req.GetOpts())
		if err == nil {
			resp.Restore = &rpc.CriuRestoreResp{Pid: ptr(int32(pid))}
		}
	default:
		err = fmt.Errorf("request %v: %w", typ, errs.ErrNotSupported)
	}
	if err != nil {
		resp.Success = ptr(false)
		resp.CrErrmsg = ptr(err.Error())
		resp.CrErrno = ptr(errnoOf(err))
	}
	return resp
}

func errnoOf(err error) int32 {
	var e unix.Errno
	if errors.As(err, &e) {
		return int32(e)
	}
	return 0
}

// The CRIU release whose interface (RPC, image format, options) cryo
// follows: what VERSION reports, so that callers that check for a
// minimum (Podman wants 3.11) take the right paths.
const (
	criuMajor = 4
	criuMinor = 0
)

func (c *session) version() *rpc.CriuVersion {
	v := &rpc.CriuVersion{MajorNumber: ptr(int32(criuMajor)), MinorNumber: ptr(int32(criuMinor)),
		Name: ptr("cryo " + c.s.Version)}
	if c.s.GitID != "" {
		v.Gitid = ptr(c.s.GitID)
	}
	return v
}

// check is CHECK: what `cryo check` would say of dump and restore.
func check() error {
	reports := feature.RunAll()
	for _, need := range []struct {
		n    feature.Need
		what string
	}{{feature.ForDump, "dump"}, {feature.ForRestore, "restore"}} {
		if !feature.Can(reports, need.n) {
			for _, r := range reports {
				p := feature.Lookup(r.Name)
				if p != nil && p.Required&need.n != 0 && r.Err() != nil {
					return fmt.Errorf("%s cannot work here: %w", need.what, r.Err())
				}
			}
		}
	}
	return nil
}

// fdPath is the path of fd n of the caller.
func (c *session) fdPath(n int32) string {
	return "/proc/" + strconv.Itoa(c.peer) + "/fd/" + strconv.Itoa(int(n))
}

// common is what dump and restore take alike from the options.
type common struct {
	dir     string
	log     *slog.Logger
	closeFn func()
}

func (c *session) common(o *rpc.CriuOpts) (*common, error) {
	var dir string
	switch {
	case o.GetImagesDirFd() >= 0:
		dir = c.fdPath(o.GetImagesDirFd())
	case o.GetImagesDir() != "":
		dir = o.GetImagesDir()
	default:
		return nil, fmt.Errorf("no images_dir_fd nor images_dir")
	}
	logDir := dir
	if o.WorkDirFd != nil {
		logDir = c.fdPath(o.GetWorkDirFd())
	}
	if f := o.GetLogFile(); f != "" && filepath.Base(f) != f {
		return nil, fmt.Errorf("log_file %q: CRIU takes a file name, no directory (use work_dir_fd)", f)
	}
	log, closeFn, err := c.s.OpenLog(logDir, o.GetLogFile(), int(o.GetLogLevel()))
	if err != nil {
		return nil, err
	}
	return &common{dir: dir, log: log, closeFn: closeFn}, nil
}

// notifier sends CRIU's NOTIFY for each point and waits for the caller's
// answer; a caller that answers notify_success false stops the operation
// there.
func (c *session) notifier(o *rpc.CriuOpts) func(string, int) error {
	if !o.GetNotifyScripts() {
		return nil
	}
	return func(event string, pid int) error {
		typ := rpc.CriuReqType_NOTIFY
		if err := c.send(&rpc.CriuResp{Type: &typ, Success: ptr(true),
			Notify: &rpc.CriuNotify{Script: ptr(event), Pid: ptr(int32(pid))}}); err != nil {
			return fmt.Errorf("notify %s: %w", event, err)
		}
		req, err := c.recv()
		if err != nil {
			return fmt.Errorf("notify %s: the caller went away: %w", event, err)
		}
		if req.GetType() != rpc.CriuReqType_NOTIFY || !req.GetNotifySuccess() {
			return fmt.Errorf("notify %s: the caller failed it", event)
		}
		return nil
	}
}

func (c *session) dump(o *rpc.CriuOpts) error {
	if err := checkOptions(o, dumpOptions); err != nil {
		return err
	}
	if o.Pid == nil || o.GetPid() == int32(c.peer) {
		return fmt.Errorf("pid: dumping the caller itself: %w", errs.ErrNotSupported)
	}
	lock, err := networkLock(o)
	if err != nil {
		return err
	}
	cm, err := c.common(o)
	if err != nil {
		return err
	}
	defer cm.closeFn()
	ctx, stop := c.callerGone()
	defer stop()
	_, err = dump.Run(dump.Options{
		Pid: int(o.GetPid()), Dir: cm.dir, LeaveRunning: o.GetLeaveRunning(), ShellJob: o.GetShellJob(),
		FileLocks: o.GetFileLocks(), GhostLimit: ghostLimit(o), Log: cm.log, Notify: c.notifier(o), Context: ctx,
		TCPEstablished: o.GetTcpEstablished(), TCPClose: o.GetTcpClose(), NetworkLock: lock,
	})
	if err != nil {
		cm.log.Error("dump failed", "pid", o.GetPid(), "err", err)
	}
	return err
}

// callerGone is cancelled when the caller hangs up, so that a dump whose
// caller was killed stops at its next step and lets the process go on as
// it was — what `cryo dump`'s worker does when its supervisor dies. It
// polls without reading: the socket still carries the notifications.
func (c *session) callerGone() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan struct{})
	go func() {
		fds := []unix.PollFd{{Fd: int32(c.conn.Fd()), Events: unix.POLLRDHUP}}
		for {
			select {
			case <-done:
				return
			default:
			}
			n, err := unix.Poll(fds, 20)
			if err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
				cancel(errors.New("the RPC caller hung up"))
				return
			}
		}
	}()
	return ctx, func() { close(done); cancel(nil) }
}

func (c *session) restore(o *rpc.CriuOpts) (int, error) {
	if err := checkOptions(o, restoreOptions); err != nil {
		return 0, err
	}
	cm, err := c.common(o)
	if err != nil {
		return 0, err
	}
	defer cm.closeFn()
	inherit, err := inheritFds(o.GetInheritFd())
	if err != nil {
		return 0, err
	}
	lock, err := networkLock(o)
	if err != nil {
		return 0, err
	}
	res, err := restore.Run(restore.Options{
		Inherit: inherit, Dir: cm.dir, Detached: true, ShellJob: o.GetShellJob(), FileLocks: o.GetFileLocks(), Log: cm.log, Notify: c.notifier(o),
		TCPEstablished: o.GetTcpEstablished(), TCPClose: o.GetTcpClose(), NetworkLock: lock,
	})
	if err != nil {
		cm.log.Error("restore failed", "err", err)
		return 0, err
	}
	return res.Pid, nil
}

// networkLock is the caller's network_lock as netlock names it; unset, or
// CRIU's default IPTABLES, is cryo's nftables rules.
func networkLock(o *rpc.CriuOpts) (netlock.Method, error) {
	if o.NetworkLock == nil {
		return netlock.NFTables, nil
	}
	switch m := o.GetNetworkLock(); m {
	case rpc.CriuNetworkLockMethod_IPTABLES:
		return netlock.IPTables, nil
	case rpc.CriuNetworkLockMethod_NFTABLES:
		return netlock.NFTables, nil
	case rpc.CriuNetworkLockMethod_SKIP:
		return netlock.Skip, nil
	default:
		return "", fmt.Errorf("network_lock %d: %w", m, ErrOption)
	}
}

// ghostLimit is the dump's limit on deleted files' contents: the caller's
// ghost_limit if it set one, else cryo's default of none.
func ghostLimit(o *rpc.CriuOpts) int64 {
	if o.GhostLimit == nil {
		return 0
	}
	return int64(o.GetGhostLimit())
}

// The options each request handles; every other one set to anything but
// its default fails the request.
var (
	commonOptions = []string{"images_dir_fd", "images_dir", "log_level", "log_file", "work_dir_fd", "notify_scripts", "shell_job", "file_locks",
		// ghost_limit is honoured when set (cryo's default is no limit).
		// Values that change nothing cryo does: cryo restores on the CPU
		// it checks itself, finds watches by file handle, and opens
		// devices by the path they were dumped with.
		"ghost_limit", "cpu_cap", "force_irmap", "evasive_devices", "tcp_established", "tcp_close", "network_lock"}
	dumpOptions    = append([]string{"pid", "leave_running"}, commonOptions...)
	restoreOptions = append([]string{"inherit_fd"}, commonOptions...)
)

// inheritFds are inherit_fd's files: fds of cryo's own, which the caller
// passed it (go-criu's AddInheritFd), by criu's key.
func inheritFds(in []*rpc.InheritFd) (map[string]*os.File, error) {
	out := map[string]*os.File{}
	for _, e := range in {
		n := e.GetFd()
		if n < 3 {
			return nil, fmt.Errorf("inherit_fd %s: fd %d is not one passed to cryo", e.GetKey(), n)
		}
		if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
			return nil, fmt.Errorf("inherit_fd %s: fd %d: %w", e.GetKey(), n, err)
		}
		if _, dup := out[e.GetKey()]; dup {
			return nil, fmt.Errorf("inherit_fd: %s given twice", e.GetKey())
		}
		out[e.GetKey()] = os.NewFile(uintptr(n), e.GetKey())
	}
	return out, nil
}

// optionNames are criu_opts' fields by number (rpc.proto), for the
// checks and their messages.
var optionNames = map[protowire.Number]string{
	1: "images_dir_fd", 68: "images_dir", 2: "pid", 3: "leave_running", 4: "ext_unix_sk", 5: "tcp_established",
	6: "evasive_devices", 7: "shell_job", 8: "file_locks", 9: "log_level", 10: "log_file", 11: "ps",
	12: "notify_scripts", 13: "root", 14: "parent_img", 15: "track_mem", 16: "auto_dedup", 17: "work_dir_fd",
	18: "link_remap", 19: "veths", 20: "cpu_cap", 21: "force_irmap", 22: "exec_cmd", 23: "ext_mnt",
	24: "manage_cgroups", 25: "cg_root", 26: "rst_sibling", 27: "inherit_fd", 28: "auto_ext_mnt",
	29: "ext_sharing", 30: "ext_masters", 31: "skip_mnt", 32: "enable_fs", 33: "unix_sk_ino",
	34: "manage_cgroups_mode", 35: "ghost_limit", 36: "irmap_scan_paths", 37: "external", 38: "empty_ns",
	39: "join_ns", 41: "cgroup_props", 42: "cgroup_props_file", 43: "cgroup_dump_controller",
	44: "freeze_cgroup", 45: "timeout", 46: "tcp_skip_in_flight", 47: "weak_sysctls", 48: "lazy_pages",
	49: "status_fd", 50: "orphan_pts_master", 51: "config_file", 52: "tcp_close", 53: "lsm_profile",
	54: "tls_cacert", 55: "tls_cacrl", 56: "tls_cert", 57: "tls_key", 58: "tls", 59: "tls_no_cn_verify",
	60: "cgroup_yard", 61: "pre_dump_mode", 62: "pidfd_store_sk", 63: "lsm_mount_context",
	64: "network_lock", 65: "mntns_compat_mode", 66: "skip_file_rwx_check", 67: "unprivileged",
	69: "leave_stopped", 70: "display_stats", 71: "log_to_stderr",
}

// optionDefaults are the varint fields whose default is not zero.
var optionDefaults = map[protowire.Number]uint64{
	1:  ^uint64(0), // images_dir_fd -1, sign-extended as int32 varints are
	9:  2,          // log_level
	20: 0xffffffff, // cpu_cap
	35: 0x100000,   // ghost_limit
	61: 1,          // pre_dump_mode SPLICE
	64: 1,          // network_lock IPTABLES
}

// checkOptions fails for any option set in o, to other than its default,
// that names does not list. It reads o's encoding, so that a field this
// cryo's copy of rpc.proto does not know (a newer caller's) is refused
// too, by number.
func checkOptions(o *rpc.CriuOpts, names []string) error {
	if o == nil {
		return fmt.Errorf("no options")
	}
	handled := map[string]bool{}
	for _, n := range names {
		handled[n] = true
	}
	b, err := o.MarshalVT()
	if err != nil {
		return err
	}
	var bad []string
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("options: %w", protowire.ParseError(n))
		}
		b = b[n:]
		isDefault := false
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			n = m
			isDefault = v == optionDefaults[num]
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			n = m
			// An empty string is no string; an empty message or list
			// item still asks for something.
			_, isString := stringOptions[num]
			isDefault = isString && len(v) == 0
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("options: %w", protowire.ParseError(n))
		}
		b = b[n:]
		name, known := optionNames[num]
		if !known {
			name = "field " + strconv.Itoa(int(num))
		}
		if isDefault || (known && handled[name]) {
			continue
		}
		bad = append(bad, name)
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrOption, strings.Join(bad, ", "))
	}
	return nil
}

// stringOptions are the singular string fields.
var stringOptions = map[protowire.Number]struct{}{
	68: {}, 10: {}, 13: {}, 14: {}, 41: {}, 42: {}, 44: {}, 51: {}, 53: {}, 54: {}, 55: {}, 56: {}, 57: {},
	60: {}, 63: {},
}

func ptr[T any](v T) *T { return &v }

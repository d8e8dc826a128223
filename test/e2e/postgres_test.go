package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryo-project/cryo/internal/image/imagetest"
	"github.com/cryo-project/cryo/internal/procfs"
)

// pgEnv is a throw-away postgres cluster run by the postgres user (it
// refuses root), reached only through its UNIX socket in dir.
type pgEnv struct {
	bin  string // /usr/lib/postgresql/N/bin
	dir  string // cluster and socket, owned by postgres
	cred *syscall.Credential
}

func setupPostgres(t *testing.T) *pgEnv {
	t.Helper()
	requireCryo(t)
	missing := func(what string, err error) {
		t.Helper()
		if os.Getenv(imagetest.StrictEnv) != "" {
			t.Fatalf("postgres test needs %s (make deps installs postgresql), and %s is set: %v", what, imagetest.StrictEnv, err)
		}
		t.Skipf("postgres test needs %s (Debian's postgresql package): %v", what, err)
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		missing("/usr/lib/postgresql/*/bin/postgres", os.ErrNotExist)
	}
	if _, err := exec.LookPath("psql"); err != nil {
		missing("psql", err)
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		missing("the postgres user", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "cryo-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Logf("--- postgres.log ---\n%s", b)
		}
		os.RemoveAll(dir)
	})
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	env := &pgEnv{bin: filepath.Dir(bins[len(bins)-1]), dir: dir, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd := exec.Command(filepath.Join(env.bin, "initdb"), "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: env.cred}
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	return env
}

// start runs the postmaster in its own session: no TCP (listen_addresses
// empty), its socket in env.dir, no autovacuum workers coming and going.
func (env *pgEnv) start(t *testing.T) int {
	t.Helper()
	logf, err := os.Create(filepath.Join(env.dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(env.bin, "postgres"), "-D", filepath.Join(env.dir, "data"),
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+env.dir, "-c", "autovacuum=off", "-c", "fsync=off")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: env.cred, Setsid: true}
	cmd.Dir = env.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { env.stop(t, pid) })
	go cmd.Wait() // the original is reaped here; a restored one by stop
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := env.psqlErr("select 1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(env.dir, "postgres.log"))
			t.Fatalf("postgres did not accept connections within 30 s:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pid
}

// stop shuts a postmaster down (SIGINT, fast shutdown), then kills it.
func (env *pgEnv) stop(t *testing.T, pid int) {
	if !runsTarget(pid, "postgres") {
		reapIfChild(pid)
		return
	}
	_ = syscall.Kill(pid, syscall.SIGINT)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if reapIfChild(pid) || !runsTarget(pid, "postgres") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	killRestored(t, pid, "postgres")
}

func (env *pgEnv) psqlErr(sql string) (string, error) {
	out, err := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", env.dir, "-U", "postgres", "-d", "postgres", "-c", sql).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (env *pgEnv) psql(t *testing.T, sql string) string {
	t.Helper()
	out, err := env.psqlErr(sql)
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return out
}

// waitChildren waits until the postmaster has only its n helper processes
// (a backend of the last psql exits on its own, a moment after psql).
func waitChildren(t *testing.T, pid, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if len(treePids(pid)) == n+1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d has %d processes (%s), want %d", pid, len(treePids(pid)), treeComms(pid), n+1)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPostgres: a postgres cluster (postmaster, checkpointer, background
// writer, WAL writer, autovacuum and replication launchers; its System V
// segment, its shared anonymous memory, its UNIX listening socket) is
// dumped whole, killed and restored, then answers psql with the rows it
// had and takes more.
func TestPostgres(t *testing.T) {
	env := setupPostgres(t)
	pm := env.start(t)
	env.psql(t, "create table t(x int, s text); insert into t select i, md5(i::text) from generate_series(1, 1000) i")
	want := env.psql(t, "select count(*), sum(x), md5(string_agg(s, ',' order by x)) from t")
	// checkpointer, background writer, WAL writer, logical replication
	// launcher (no autovacuum launcher: autovacuum is off).
	const helpers = 4
	waitChildren(t, pm, helpers)
	img := filepath.Join(env.dir, "img")
	segsBefore := sysvShmOf(t, pm)
	if len(segsBefore) != 1 {
		t.Fatalf("postgres holds %d System V segments, want 1 (%v)", len(segsBefore), segsBefore)
	}
	pids := treePids(pm)
	mustDump(t, pm, img)
	// The killed helpers are orphans re-parented to the test (a
	// subreaper): reap them, or their pids stay taken.
	for _, pid := range pids {
		for deadline := time.Now().Add(10 * time.Second); !reapIfChild(pid); {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d of the postmaster's tree still there after the dump (state %s)", pid, procState(pid))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if _, err := env.psqlErr("select 1"); err == nil {
		t.Fatal("psql connects while postgres is dumped and killed")
	}
	w := armState(t, img, "pre-resume", pm)
	cp := startCryo(t, restoreArgs(img, "-d")...)
	if r := cp.wait(restoreTimeout); r.code != 0 {
		t.Fatalf("restore -d: %v\n%s", r, lastLines(readLog(img+".restore.log"), 20))
	}
	expectSameState(t, img, w, cp.done)
	if n := len(treePids(pm)) - 1; n != helpers {
		t.Errorf("restored postmaster has %d children (%s), want %d", n, treeComms(pm), helpers)
	}
	if got := sysvShmOf(t, pm); len(got) != 1 || got[0] != segsBefore[0] {
		t.Errorf("postgres's System V segment after restore: %v, was %v", got, segsBefore)
	}
	if got := env.psql(t, "select count(*), sum(x), md5(string_agg(s, ',' order by x)) from t"); got != want {
		t.Errorf("rows after restore: %q, want %q", got, want)
	}
	env.psql(t, "insert into t select i, md5(i::text) from generate_series(1001, 1100) i")
	if got := env.psql(t, "select count(*), sum(x) from t"); got != "1100|605550" {
		t.Errorf("after inserting 100 more rows: %q, want 1100|605550", got)
	}
	// A checkpoint makes the restored checkpointer and WAL writer work.
	env.psql(t, "checkpoint")
}

// treeComms names the processes of the tree at pid, for messages.
func treeComms(pid int) string {
	var names []string
	for _, p := range treePids(pid) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline")
		names = append(names, strconv.Itoa(p)+" "+strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")))
	}
	return strings.Join(names, ", ")
}

// sysvShmOf lists the System V segments whose creator is uid of pid, as
// /proc/sysvipc/shm shows what a restore must keep: key, id, mode, size,
// attachments, owner and creator.
func sysvShmOf(t *testing.T, pid int) []string {
	t.Helper()
	st, err := os.Stat("/proc/" + strconv.Itoa(pid))
	if err != nil {
		t.Fatal(err)
	}
	uid := st.Sys().(*syscall.Stat_t).Uid
	segs, err := procfs.SysvShm()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range segs {
		if s.CUID == uid {
			out = append(out, fmt.Sprintf("key %#x id %d mode %o size %d nattch %d uid %d gid %d cuid %d cgid %d", uint32(s.Key), s.ID, s.Mode, s.Size, s.Nattch, s.UID, s.GID, s.CUID, s.CGID))
		}
	}
	return out
}

// TestPostgresSessionKept: a psql session of the test, connected to its
// backend over the cluster's UNIX socket, is in the middle of a
// transaction (a temporary table, rows inserted, nothing committed) when
// the cluster is dumped, killed and restored. The same psql, on the same
// connection, then sees its uncommitted rows, commits, and the rows are
// there for a new session; its temporary table is still its own.
func TestPostgresSessionKept(t *testing.T) {
	env := setupPostgres(t)
	pm := env.start(t)
	env.psql(t, "create table kept(x int)")
	const helpers = 4
	waitChildren(t, pm, helpers)
	sess := newPsqlSession(t, env)
	sess.run(t, "begin; create temp table mine(y int); insert into mine values (7); insert into kept select generate_series(1, 50)")
	if got := sess.run(t, "select count(*) from kept"); got != "50" {
		t.Fatalf("in the transaction: %q, want 50", got)
	}
	if got := env.psql(t, "select count(*) from kept"); got != "0" {
		t.Fatalf("another session sees %q rows before the commit, want 0", got)
	}
	waitChildren(t, pm, helpers+1) // and the session's backend
	img := filepath.Join(env.dir, "img")
	pids := treePids(pm)
	mustDump(t, pm, img)
	for _, pid := range pids {
		for deadline := time.Now().Add(10 * time.Second); !reapIfChild(pid); {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d of the postmaster's tree still there after the dump (state %s)", pid, procState(pid))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	w := armState(t, img, "pre-resume", pm)
	cp := startCryo(t, restoreArgs(img, "-d")...)
	if r := cp.wait(restoreTimeout); r.code != 0 {
		t.Fatalf("restore -d: %v\n%s", r, lastLines(readLog(img+".restore.log"), 20))
	}
	expectSameState(t, img, w, cp.done)
	if got := sess.run(t, "select count(*), sum(x) from kept"); got != "50|1275" {
		t.Fatalf("the kept session after the restore: %q, want its 50 uncommitted rows", got)
	}
	sess.run(t, "insert into kept values (1000); commit")
	if got := env.psql(t, "select count(*), sum(x) from kept"); got != "51|2275" {
		t.Errorf("a new session after the kept one committed: %q, want 51|2275", got)
	}
	if got := sess.run(t, "select y from mine"); got != "7" {
		t.Errorf("the session's temporary table: %q, want 7", got)
	}
	if _, err := env.psqlErr("select y from mine"); err == nil {
		t.Error("another session sees the kept session's temporary table")
	}
	sess.close(t)
}

// psqlSession is one psql the test talks to through its stdin and stdout.
type psqlSession struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	n   int
}

func newPsqlSession(t *testing.T, env *pgEnv) *psqlSession {
	t.Helper()
	cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-h", env.dir, "-U", "postgres", "-d", "postgres")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &psqlSession{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() {
		s.in.Close()
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
	return s
}

// run sends sql and returns what psql printed for it, up to a marker.
func (s *psqlSession) run(t *testing.T, sql string) string {
	t.Helper()
	s.n++
	mark := fmt.Sprintf("--mark-%d--", s.n)
	if _, err := fmt.Fprintf(s.in, "%s;\n\\echo %s\n", sql, mark); err != nil {
		t.Fatalf("psql %q: %v", sql, err)
	}
	var lines []string
	done := make(chan error, 1)
	go func() {
		for {
			l, err := s.out.ReadString('\n')
			if err != nil {
				done <- err
				return
			}
			l = strings.TrimRight(l, "\n")
			if l == mark {
				done <- nil
				return
			}
			lines = append(lines, l)
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("psql %q: %v (printed %q)", sql, err, lines)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("psql %q: no answer in 20 s", sql)
	}
	return strings.Join(lines, "\n")
}

func (s *psqlSession) close(t *testing.T) {
	t.Helper()
	s.in.Close()
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("psql at its end: %v", err)
	}
}

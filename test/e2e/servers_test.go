package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cryo-project/cryo/internal/image/imagetest"
	"github.com/cryo-project/cryo/internal/imageset"
)

// Real servers, started the way their users start them, checkpointed with
// no client connected, killed, restored, and asked again: their answers
// prove their state (a page's bytes, a counter kept in memory), the
// harness compares /proc before and after, and the restored tree is
// dumped and restored once more. Each cycle logs its dump and restore
// times and the frozen time of stats-dump.

// serverTool is the path of a program a server test needs, from a Debian
// package make deps installs; the test is skipped without it, or fails
// under CRYO_TEST_STRICT.
func serverTool(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv(imagetest.StrictEnv) != "" {
			t.Fatalf("%s (make deps installs %s), and %s is set: %v", path, pkg, imagetest.StrictEnv, err)
		}
		t.Skipf("%s is not installed (Debian's %s; make deps installs it): %v", path, pkg, err)
	}
	return path
}

// freePort is a TCP port of 127.0.0.1 free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

// httpGet fetches url on a connection of its own, closed after the answer.
func httpGet(url string) (string, error) {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

// waitGet polls url until it answers, for a server starting up.
func waitGet(t *testing.T, url string, d time.Duration) string {
	t.Helper()
	var body string
	var err error
	for deadline := time.Now().Add(d); ; time.Sleep(20 * time.Millisecond) {
		if body, err = httpGet(url); err == nil {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %v: %v", url, d, err)
		}
	}
}

// waitTreeIdle waits until no process of the tree at root holds a
// connected TCP socket: a server closes its end a moment after the client.
func waitTreeIdle(t *testing.T, root int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		busy := 0
		for _, p := range treePids(root) {
			busy += connectedSockets(p)
		}
		if busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the tree of %d still holds %d connected TCP sockets after 10 s", root, busy)
		}
	}
}

// serverCycle dumps the tree of the server at pid into a fresh image
// (with extra flags, given to the restore too: --file-locks), waits for it
// to be gone (reaping it: the test is its subreaper), restores it detached
// with the /proc comparison armed, and logs the timings.
func serverCycle(t *testing.T, name string, cycle, pid int, extra ...string) string {
	t.Helper()
	waitTreeIdle(t, pid)
	pids := treePids(pid)
	img := filepath.Join(t.TempDir(), "img")
	start := time.Now()
	mustDump(t, pid, img, extra...)
	dumpTime := time.Since(start)
	for _, p := range pids {
		if _, err := waitReaped(p, exitTimeout); err != nil && !reapIfChild(p) {
			t.Fatalf("%s pid %d after the dump: %v", name, p, err)
		}
	}
	reapOrphans(t)
	frozen, written := "?", "?"
	if set, err := imageset.Load(img); err == nil && set.Stats.GetDump() != nil {
		frozen = (time.Duration(set.Stats.GetDump().GetFrozenTime()) * time.Microsecond).String()
		written = fmt.Sprintf("%.1f MiB", float64(set.Stats.GetDump().GetPagesWritten())*4096/(1<<20))
	}
	w := armState(t, img, "pre-resume", pid)
	start = time.Now()
	cp := startCryo(t, restoreArgs(img, append([]string{"-d"}, extra...)...)...)
	expectSameState(t, img, w, cp.done)
	if r := cp.wait(restoreTimeout); r.code != 0 {
		t.Fatalf("restore %d of %s: %v\n%s", cycle, name, r, lastLines(readLog(img+".restore.log"), 30))
	}
	t.Logf("TIMING %s cycle %d: %d processes, %s of pages, dump %v (frozen %v), restore %v",
		name, cycle, len(pids), written, dumpTime.Round(time.Microsecond), frozen, time.Since(start).Round(time.Microsecond))
	return img
}

// killServerTree kills the tree at root if root's command line contains
// marker (something only this test's server has: its config or script
// path; nginx's workers rename themselves), and reaps it. The root goes
// first: an nginx master that saw a worker die would fork a new one.
func killServerTree(t *testing.T, root int, marker string) {
	if !strings.Contains(readCmdline(root), marker) {
		reapIfChild(root)
		return
	}
	pids := treePids(root)
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	for _, p := range pids {
		if _, err := waitReaped(p, exitTimeout); err != nil && !errors.Is(err, syscall.ECHILD) {
			t.Errorf("pid %d (%s) survived SIGKILL: %v", p, readCmdline(p), err)
		}
	}
}

// nginxConf copies Debian's /etc/nginx into dir, with what a second
// instance must not share pointed into dir: the pid file, the logs, the
// port (80 may be taken, by another test or a system nginx) and the
// document root. Everything else is Debian's default: `user www-data`,
// `worker_processes auto`, sendfile, the default site.
func nginxConf(t *testing.T, dir, port string) string {
	t.Helper()
	conf := filepath.Join(dir, "conf")
	if out, err := exec.Command("cp", "-rL", "/etc/nginx", conf).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/nginx: %v\n%s", err, out)
	}
	edit := func(name string, pairs ...string) {
		p := filepath.Join(conf, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		for i := 0; i < len(pairs); i += 2 {
			if !strings.Contains(s, pairs[i]) {
				t.Fatalf("%s has no %q: not Debian's default config", p, pairs[i])
			}
			s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("nginx.conf",
		"pid /run/nginx.pid;", "pid "+filepath.Join(dir, "nginx.pid")+";",
		"error_log /var/log/nginx/error.log;", "error_log "+filepath.Join(dir, "error.log")+";",
		"access_log /var/log/nginx/access.log;", "access_log "+filepath.Join(dir, "access.log")+";",
		"include /etc/nginx/", "include "+conf+"/")
	edit("sites-enabled/default",
		"listen 80 default_server;", "listen 127.0.0.1:"+port+" default_server;",
		"listen [::]:80 default_server;", "listen [::1]:"+port+" default_server;",
		"root /var/www/html;", "root "+filepath.Join(dir, "www")+";")
	return filepath.Join(conf, "nginx.conf")
}

// nginxWorkers are the worker pids of master, sorted, and whether each
// runs as uid, the user the config names (a worker just forked is still
// root for a moment).
func nginxWorkers(master int, uid uint32) ([]int, bool) {
	var out []int
	all := true
	for _, p := range treePids(master)[1:] {
		st, err := os.Stat("/proc/" + strconv.Itoa(p))
		if err != nil {
			continue
		}
		all = all && st.Sys().(*syscall.Stat_t).Uid == uid
		out = append(out, p)
	}
	sort.Ints(out)
	return out, all
}

// settledWorkers are nginxWorkers, which must all run as uid.
func settledWorkers(t *testing.T, master int, uid uint32) []int {
	t.Helper()
	w, ok := nginxWorkers(master, uid)
	if !ok {
		t.Errorf("nginx workers %v: not all run as uid %d (www-data)", w, uid)
	}
	return w
}

// waitNewWorkers waits, after a SIGHUP to master, until it has n workers
// and none of old: the old ones finish gracefully, the new ones start.
func waitNewWorkers(t *testing.T, master int, old []int, n int, uid uint32) []int {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		now, settled := nginxWorkers(master, uid)
		fresh := len(now) == n && settled
		for _, p := range now {
			for _, o := range old {
				fresh = fresh && p != o
			}
		}
		if fresh {
			return now
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx master %d after SIGHUP: workers %v, want %d new ones (old %v)", master, now, n, old)
		}
	}
}

// TestNginx: Debian's nginx with its default config, started as Debian's
// service starts it (`nginx -g 'daemon on; master_process on;'`: the
// master daemonizes, runs as root and forks its workers, which switch to
// www-data), serves a file; it is dumped, killed, restored and serves the
// same bytes; its master, sent SIGHUP, re-reads the config and replaces
// its workers, which serve too. The restored tree is dumped and restored
// again, and reloads again, by `nginx -s reload`.
func TestNginx(t *testing.T) {
	requireCryo(t)
	bin := serverTool(t, "/usr/sbin/nginx", "nginx")
	www, err := user.Lookup("www-data")
	if err != nil {
		t.Fatalf("the www-data user (Debian's nginx runs its workers as it): %v", err)
	}
	wwwUID, _ := strconv.Atoi(www.Uid)
	// The workers (www-data) read the page: the test's directories must
	// let them through.
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	page := make([]byte, 100<<10)
	for i := range page {
		page[i] = byte('a' + (i*7+i/1000)%26)
	}
	copy(page, fmt.Sprintf("cryo nginx page %d\n", time.Now().UnixNano()))
	if err := os.WriteFile(filepath.Join(dir, "www", "page.txt"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	conf := nginxConf(t, dir, port)
	out, err := exec.Command(bin, "-c", conf, "-g", "daemon on; master_process on;").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "nginx.pid"))
	if err != nil {
		t.Fatalf("nginx wrote no pid file: %v", err)
	}
	master, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("nginx pid file: %q", b)
	}
	// Every worker seen, to be killed at the end even if it outlived its
	// master (a test that failed half-way).
	seen := map[int]bool{}
	t.Cleanup(func() {
		killServerTree(t, master, conf)
		for p := range seen {
			if strings.HasPrefix(readCmdline(p), "nginx: worker process") {
				_ = syscall.Kill(p, syscall.SIGKILL)
				waitReaped(p, exitTimeout)
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("--- nginx error.log ---\n%s", b)
		}
	})
	url := "http://127.0.0.1:" + port + "/page.txt"
	if got := waitGet(t, url, readyTimeout); got != string(page) {
		t.Fatalf("nginx served %d bytes, want the page's %d", len(got), len(page))
	}
	uid := uint32(wwwUID)
	var workers []int
	for deadline := time.Now().Add(readyTimeout); ; time.Sleep(10 * time.Millisecond) {
		w, settled := nginxWorkers(master, uid)
		if settled && len(w) > 0 {
			workers = w
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx master %d: workers %v, not all running as www-data", master, w)
		}
	}
	note := func(ws []int) {
		for _, p := range ws {
			seen[p] = true
		}
	}
	note(workers)
	for i := 0; i < 5; i++ { // warm up: every worker may have served
		if got, err := httpGet(url); err != nil || got != string(page) {
			t.Fatalf("warm-up request %d: %d bytes, %v", i, len(got), err)
		}
	}
	for cycle := 1; cycle <= 2; cycle++ {
		serverCycle(t, "nginx", cycle, master)
		if got := settledWorkers(t, master, uid); fmt.Sprint(got) != fmt.Sprint(workers) {
			t.Fatalf("restore %d: workers %v, were %v", cycle, got, workers)
		}
		for i := 0; i < 5; i++ {
			if got, err := httpGet(url); err != nil || got != string(page) {
				t.Fatalf("restore %d, request %d: nginx served %d bytes (%v), want the page's %d", cycle, i, len(got), err, len(page))
			}
		}
		// The first time a SIGHUP of the test's, the second `nginx -s
		// reload`, which reads the pid file and sends the same.
		if cycle == 1 {
			if err := syscall.Kill(master, syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		} else if out, err := exec.Command(bin, "-c", conf, "-s", "reload").CombinedOutput(); err != nil {
			t.Fatalf("nginx -s reload: %v\n%s", err, out)
		}
		workers = waitNewWorkers(t, master, workers, len(workers), uid)
		note(workers)
		for i := 0; i < 5; i++ {
			if got, err := httpGet(url); err != nil || got != string(page) {
				t.Fatalf("restore %d, after SIGHUP, request %d: nginx served %d bytes (%v), want the page's %d", cycle, i, len(got), err, len(page))
			}
		}
	}
}

// counterServer is a server that counts the requests it answered in its
// memory and answers each with the count.
type counterServer struct {
	pid    int
	url    string
	marker string
	logf   string
}

// startCounter starts argv (in dir, in a session of its own) and waits
// for it to answer at url.
func startCounter(t *testing.T, dir, url, marker string, argv ...string) *counterServer {
	t.Helper()
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &counterServer{pid: cmd.Process.Pid, url: url, marker: marker, logf: logPath}
	t.Cleanup(func() {
		killServerTree(t, s.pid, marker)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- server log ---\n%s", b)
		}
	})
	if got := waitGet(t, url, 60*time.Second); got != "1\n" {
		t.Fatalf("the first request answered %q, want \"1\\n\"", got)
	}
	return s
}

// expectCount makes n requests, which must answer from+1 ... from+n.
func (s *counterServer) expectCount(t *testing.T, what string, from, n int) int {
	t.Helper()
	for i := 1; i <= n; i++ {
		got, err := httpGet(s.url)
		if want := strconv.Itoa(from+i) + "\n"; err != nil || got != want {
			t.Fatalf("%s: request %d answered %q (%v), want %q", what, i, got, err, want)
		}
	}
	return from + n
}

// counterTest warms the server up (a few hundred requests: a JIT compiles
// the handler, a collector runs), then dumps and restores it twice; after
// each restore the count goes on from where it was, for as many requests
// again.
func counterTest(t *testing.T, name string, s *counterServer, extra ...string) {
	const n = 300
	count := s.expectCount(t, "warm-up", 1, n)
	for cycle := 1; cycle <= 2; cycle++ {
		serverCycle(t, name, cycle, s.pid, extra...)
		count = s.expectCount(t, fmt.Sprintf("restore %d", cycle), count, n)
	}
}

// TestNode: a node (v20, Debian's nodejs) HTTP server script that counts
// its requests in memory — libuv's epoll, eventfds and signal pipes, V8's
// worker threads — continues its count after each of two restores.
func TestNode(t *testing.T) {
	requireCryo(t)
	node := serverTool(t, "/usr/bin/node", "nodejs")
	dir := t.TempDir()
	script := filepath.Join(dir, "counter.js")
	src := `const http = require('http');
let count = 0;
http.createServer((req, res) => {
  count++;
  res.setHeader('Connection', 'close');
  res.end(count + '\n');
}).listen(parseInt(process.argv[2], 10), '127.0.0.1');
`
	if err := os.WriteFile(script, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s := startCounter(t, dir, "http://127.0.0.1:"+port+"/", script, node, script, port)
	counterTest(t, "node", s)
}

// TestJVM: a single-file Java program (java 17, `java Server.java`, as a
// user runs one: compiled in memory by the launcher, the JVM's perf data
// on as by default) serving HTTP with com.sun.net.httpserver and counting
// its requests in an AtomicLong. What the JVM holds makes this the
// hardest of the three: some twenty threads, a UNIX socket whose peer it
// closed, its perf data file in /tmp/hsperfdata_USER, mapped shared and
// locked with a flock only the mapping holds (so the dump and restore take
// --file-locks, as with criu), epoll and eventfd, signal handlers. The
// count goes on after each of two restores.
func TestJVM(t *testing.T) {
	requireCryo(t)
	java := serverTool(t, "/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "openjdk-17-jre-headless")
	dir := t.TempDir()
	src := filepath.Join(dir, "Server.java")
	prog := `import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicLong;

public class Server {
    public static void main(String[] args) throws Exception {
        AtomicLong count = new AtomicLong();
        HttpServer s = HttpServer.create(new InetSocketAddress("127.0.0.1", Integer.parseInt(args[0])), 0);
        s.createContext("/", ex -> {
            byte[] b = (count.incrementAndGet() + "\n").getBytes(StandardCharsets.UTF_8);
            ex.getResponseHeaders().set("Connection", "close");
            ex.sendResponseHeaders(200, b.length);
            ex.getResponseBody().write(b);
            ex.close();
        });
        s.start();
    }
}
`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s := startCounter(t, dir, "http://127.0.0.1:"+port+"/", src, java, src, port)
	perf := fmt.Sprintf("/tmp/hsperfdata_%s/%d", currentUser(t), s.pid)
	if _, err := os.Stat(perf); err != nil {
		t.Fatalf("the JVM has no perf data file, as it has by default: %v", err)
	}
	counterTest(t, "jvm", s, "--file-locks")
}

func currentUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

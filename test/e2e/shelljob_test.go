package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPty returns the master and slave of a new pseudo-terminal.
func openPty(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

var countLine = regexp.MustCompile(`count (\d+)`)

// nextCount reads the terminal until a "count N" line, bounded by d.
func nextCount(t *testing.T, lines <-chan string, d time.Duration) int {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("terminal closed before a count line")
			}
			if m := countLine.FindStringSubmatch(l); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		case <-deadline:
			t.Fatal("no count line on the terminal in time")
		}
	}
}

func readLines(f *os.File) <-chan string {
	ch := make(chan string, 1024)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// A job of an interactive shell: its stdio is the terminal. The dump needs
// --shell-job (and says so without it); the restore re-attaches the stdio to
// the terminal of `cryo restore`, where the job goes on counting.
func TestShellJob(t *testing.T) {
	requireRoot(t)
	requireCryo(t)
	m1, s1 := openPty(t)
	cmd := exec.Command(filepath.Join(repo, "bin", "targets", "counter"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s1, s1, s1
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	s1.Close() // the job holds the terminal now; its end closes the master's reads
	defer killRestored(t, pid, "counter")
	defer cmd.Process.Kill()
	first := readLines(m1)
	before := nextCount(t, first, 5*time.Second)

	img := filepath.Join(t.TempDir(), "img")
	if r := dump(t, pid, img, "--leave-running"); r.code == 0 || !strings.Contains(r.output, "--shell-job") || !strings.Contains(r.output, "/dev/pts/") {
		t.Fatalf("dump of a job on a terminal without --shell-job: want a failure naming the terminal and --shell-job, got %v", r)
	}
	expectAliveUnstopped(t, pid, "after the refused dump")

	mustDump(t, pid, img, "--shell-job")
	cmd.Wait()
	last := before
	for drained := false; !drained; { // what the job wrote before it was killed
		select {
		case l, ok := <-first:
			if !ok {
				drained = true
			} else if m := countLine.FindStringSubmatch(l); m != nil {
				last, _ = strconv.Atoi(m[1])
			}
		case <-time.After(2 * time.Second):
			drained = true
		}
	}

	m2, s2 := openPty(t)
	restore := exec.Command(cryoBin, "restore", "-D", img, "-d", "--shell-job", "-v4", "-o", img+".restore.log")
	restore.Stdin, restore.Stdout, restore.Stderr = s2, s2, s2
	if err := restore.Run(); err != nil {
		t.Fatalf("restore --shell-job: %v\n%s", err, readLog(img+".restore.log"))
	}
	s2.Close()
	after := nextCount(t, readLines(m2), 5*time.Second)
	if after <= last || after > last+100 {
		t.Fatalf("after restore the job printed count %d on the new terminal; it stopped at %d", after, last)
	}
	n, _ := unix.IoctlGetInt(int(m2.Fd()), unix.TIOCGPTN)
	if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/1", pid)); link != "/dev/pts/"+strconv.Itoa(n) {
		t.Errorf("restored stdout is %q, want the restoring terminal /dev/pts/%d", link, n)
	}
}

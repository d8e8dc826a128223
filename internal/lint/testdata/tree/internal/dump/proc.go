package dump

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

const selfStatus = "/proc/self/status"

func children(pid int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	var out []int
	for _, f := range strings.Fields(string(b)) { // want procparse
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

type reader struct{}

func (r *reader) limits(pid int) int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	return r.parseLimits(b) + parseMore(b)
}

// parseLimits parses what its caller read.
func (r *reader) parseLimits(b []byte) int {
	return len(bytes.Split(b, []byte("\n"))) // want procparse
}

func parseMore(b []byte) int {
	var n int
	fmt.Sscanf(string(b), "%d", &n) // want procparse
	return n
}

func status() int {
	f, _ := os.Open(selfStatus)
	defer f.Close()
	s := bufio.NewScanner(f) // want procparse
	n := 0
	for s.Scan() {
		n++
	}
	return n
}

// fds only builds paths under /proc: not parsing.
func fds(pid int) int {
	ents, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(ents)
}

// words parses, but nothing read from /proc.
func words(s string) []string { return strings.Fields(s) }

func callsWords() []string { return words("a b") }

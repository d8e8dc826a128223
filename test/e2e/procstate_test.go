package e2e

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
)

// A task snapshot is what /proc shows of every thread of a tree that a
// restore must give back exactly: identity, signal state, credentials,
// seccomp, scheduling, CPU affinity, timer slack, audit ids. Taken before
// the dump and after the restore, the two must be equal.

// statusKeys are the /proc/PID/task/TID/status lines compared.
var statusKeys = []string{
	"Name", "Umask", "Tgid", "Pid", "PPid", "TracerPid", "Uid", "Gid", "Groups", "NStgid", "NSpid", "NSpgid", "NSsid",
	"Threads", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
	"NoNewPrivs", "Seccomp", "Seccomp_filters", "Speculation_Store_Bypass", "SpeculationIndirectBranch",
	"Cpus_allowed", "Cpus_allowed_list", "Mems_allowed", "Mems_allowed_list",
}

// statFields are the /proc/PID/task/TID/stat fields compared, by number
// (proc(5)).
var statFields = map[int]string{
	4: "ppid", 5: "pgrp", 6: "session", 18: "priority", 19: "nice", 20: "num_threads", 38: "exit_signal",
	40: "rt_priority", 41: "policy",
}

// taskFiles are whole small files of /proc/PID/task/TID compared.
var taskFiles = []string{"comm", "loginuid", "sessionid", "timerslack_ns", "personality", "oom_score_adj", "children"}

// snapshotTree reads the state of every thread of every process of the
// tree rooted at root, keyed "pid/tid field".
func snapshotTree(t *testing.T, root int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, pid := range treePids(root) {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatalf("snapshot of %d: %v", pid, err)
		}
		for _, task := range tasks {
			dir := fmt.Sprintf("/proc/%d/task/%s", pid, task.Name())
			key := fmt.Sprintf("%d/%s ", pid, task.Name())
			st, err := os.ReadFile(dir + "/status")
			if err != nil {
				continue // exited meanwhile: the other snapshot will say so
			}
			fields := map[string]string{}
			for _, line := range strings.Split(string(st), "\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					fields[k] = strings.TrimSpace(v)
				}
			}
			for _, k := range statusKeys {
				if v, ok := fields[k]; ok {
					out[key+k] = v
				}
			}
			// Stopped or not is what restore keeps; sleeping and running
			// are the scheduler's.
			out[key+"stopped"] = fmt.Sprint(strings.HasPrefix(fields["State"], "T"))
			if b, err := os.ReadFile(dir + "/stat"); err == nil {
				s := string(b)
				if i := strings.LastIndexByte(s, ')'); i >= 0 {
					f := strings.Fields(s[i+1:]) // f[0] is field 3
					for n, name := range statFields {
						if n-3 < len(f) {
							out[key+name] = f[n-3]
						}
					}
				}
			}
			for _, name := range taskFiles {
				if b, err := os.ReadFile(dir + "/" + name); err == nil {
					v := strings.TrimSpace(string(b))
					if name == "children" {
						// Which children, not in which order: the kernel
						// lists them in the order they became children,
						// which restore cannot always repeat (a zombie is
						// made after the living, a re-parented child
						// when it is re-parented).
						f := strings.Fields(v)
						sort.Strings(f)
						v = strings.Join(f, " ")
					}
					out[key+name] = v
				}
			}
		}
	}
	return out
}

// compareSnapshots fails the test for every field that differs; skip
// names fields (the part after "pid/tid ") that may.
func compareSnapshots(t *testing.T, what string, before, after map[string]string, skip ...string) {
	t.Helper()
	if diffs := diffSnapshots(before, after, skip...); len(diffs) > 0 {
		t.Errorf("%s: /proc differs before and after:\n%s", what, strings.Join(diffs, "\n"))
	}
}

// diffSnapshots lists the fields that differ, sorted.
func diffSnapshots(before, after map[string]string, skip ...string) []string {
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	var diffs []string
	for k, v := range before {
		if _, f, _ := strings.Cut(k, " "); skipped[f] {
			continue
		}
		if w, ok := after[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: %q, gone after", k, v))
		} else if w != v {
			diffs = append(diffs, fmt.Sprintf("%s: %q, after %q", k, v, w))
		}
	}
	for k, w := range after {
		if _, f, _ := strings.Cut(k, " "); skipped[f] {
			continue
		}
		if _, ok := before[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: new after: %q", k, w))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// Command gothreads is the Go test target of cryo's e2e tests: a Go runtime
// with its own threads, goroutines on GOMAXPROCS=4, a channel pipeline, sleep
// loops and a goroutine blocked on a channel receive. It follows the protocol
// of test/targets/common.h: print READY, poll for the trigger file given as
// argument, then check everything and print PASS/FAIL lines.
package main

import (
	"fmt"
	"hash/crc64"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

var failed int

func check(name string, ok bool, format string, args ...any) {
	if ok {
		fmt.Printf("PASS %s\n", name)
		return
	}
	failed++
	fmt.Printf("FAIL %s: %s\n", name, fmt.Sprintf(format, args...))
}

func tasks() []int {
	ents, _ := os.ReadDir("/proc/self/task")
	var ids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			ids = append(ids, n)
		}
	}
	sort.Ints(ids)
	return ids
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gothreads TRIGGER")
		os.Exit(2)
	}
	trigger := os.Args[1]
	runtime.GOMAXPROCS(4)
	pid := os.Getpid()
	fmt.Printf("PID %d\n", pid)

	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	table := crc64.MakeTable(crc64.ECMA)
	bigSum := crc64.Checksum(big, table)

	// Goroutines doing CPU work, in bursts: on 2 cores, four goroutines
	// spinning flat out would starve everything else for seconds.
	var workers [4]atomic.Uint64
	for i := range workers {
		go func() {
			for {
				workers[i].Add(1)
				if n := workers[i].Load(); n%(1<<16) == 0 {
					time.Sleep(time.Millisecond)
				} else if n%1024 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	// Sleep loops.
	var sleeps [2]atomic.Uint64
	for i := range sleeps {
		go func() {
			for {
				time.Sleep(time.Millisecond)
				sleeps[i].Add(1)
			}
		}()
	}
	// A pipeline: numbers -> squares -> running sum; the sum of the first n
	// squares has a closed form, so a lost or repeated item shows.
	var items, sum atomic.Uint64
	nums, squares := make(chan uint64), make(chan uint64, 8)
	go func() {
		for i := uint64(1); ; i++ {
			nums <- i
		}
	}()
	go func() {
		for n := range nums {
			squares <- n * n
		}
	}()
	go func() {
		for sq := range squares {
			sum.Add(sq)
			items.Add(1)
			if items.Load()%64 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// A goroutine blocked on a receive until after the trigger.
	wake, woke := make(chan int), make(chan int)
	go func() { woke <- <-wake + 1 }()

	time.Sleep(50 * time.Millisecond)
	t0 := time.Now()
	tasksBefore := tasks()
	var workersBefore [4]uint64
	for i := range workers {
		workersBefore[i] = workers[i].Load()
	}
	sleepsBefore := sleeps[0].Load()
	itemsBefore := items.Load()
	fmt.Println("READY")

	for {
		if _, err := os.Stat(trigger); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Printf("VERIFY pid=%d\n", os.Getpid())

	check("pid", os.Getpid() == pid, "getpid %d, was %d", os.Getpid(), pid)
	now := time.Now()
	check("time-forward", now.After(t0) && now.Round(0).After(t0.Round(0)), "now %v, READY at %v", now, t0)
	after := tasks()
	missing := []int{}
	have := map[int]bool{}
	for _, id := range after {
		have[id] = true
	}
	for _, id := range tasksBefore {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	check("runtime-threads", len(missing) == 0, "threads %v gone (now %v)", missing, after)

	time.Sleep(100 * time.Millisecond)
	for i := range workers {
		w := workers[i].Load()
		check(fmt.Sprintf("worker-%d", i), w > workersBefore[i], "count %d, was %d at READY", w, workersBefore[i])
	}
	check("sleep-loop", sleeps[0].Load() > sleepsBefore, "count %d, was %d", sleeps[0].Load(), sleepsBefore)
	n := items.Load()
	check("pipeline-advances", n > itemsBefore, "items %d, was %d", n, itemsBefore)
	// Read sum and items consistently: stop nothing, just retry until they
	// are read without an item landing in between.
	var s, k uint64
	for range 1000 {
		k = items.Load()
		s = sum.Load()
		if items.Load() == k && sum.Load() == s {
			break
		}
	}
	want := k * (k + 1) * (2*k + 1) / 6
	check("pipeline-sum", s == want || s == want+(k+1)*(k+1), "sum %d for %d items, want %d", s, k, want)
	check("big-checksum", crc64.Checksum(big, table) == bigSum, "crc64 changed")

	wake <- 41
	select {
	case v := <-woke:
		check("chan-receive-wakes", v == 42, "got %d", v)
	case <-time.After(5 * time.Second):
		check("chan-receive-wakes", false, "blocked goroutine did not wake in 5 s")
	}
	fmt.Printf("RESULT %d failed\n", failed)
	if failed > 0 {
		os.Exit(1)
	}
}

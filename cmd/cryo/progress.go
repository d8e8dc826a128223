package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// progress draws a one-line bar on stderr for long operations, and only
// when stderr is a terminal and the work has lasted over a second.
type progress struct {
	mu    sync.Mutex
	what  string
	start time.Time
	last  time.Time
	shown bool
}

func newProgress(what string) *progress {
	if !isTerminal() {
		return nil
	}
	return &progress{what: what, start: time.Now()}
}

func (p *progress) update(done, total uint64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if now.Sub(p.start) < time.Second || now.Sub(p.last) < 100*time.Millisecond {
		return
	}
	p.last = now
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	fmt.Fprintf(os.Stderr, "\r%s: %5.1f%% (%d/%d MiB)", p.what, pct, done*4096>>20, total*4096>>20)
	p.shown = true
}

func (p *progress) finish() {
	if p != nil && p.shown {
		fmt.Fprintln(os.Stderr)
	}
}

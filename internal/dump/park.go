package dump

import (
	"errors"
	"time"
)

// parkTime is how long a parked thread sleeps on if cryo dies: the keeper
// takes repair mode off the tree's connections as soon as the dump's
// files close, well within it.
const parkTime = 3 * time.Second

// park holds every thread that could use an established connection of
// the tree (every thread of a process that has one open) in an injected
// sleep (inject.Task.Park) while the connections are in repair mode, and
// returns what lets them go again. Merely stopped, the threads would run
// the moment cryo died (SIGKILL, the OOM killer), and a read or write in
// repair mode fails with EPERM, a failure no program expects; parked, they
// sleep on until the keeper has taken repair mode off. A process in a
// group stop stays stopped when cryo dies anyway, and one without a
// return trampoline cannot be parked (the log says so).
func (t *tree) park() (unpark func() error, err error) {
	holders := map[int]bool{}
	for _, pid := range t.files.TCPHolders() {
		holders[pid] = true
	}
	var parked []*process
	unpark = func() error {
		var errl []error
		for _, p := range parked {
			errl = append(errl, p.unpark())
		}
		parked = nil
		return errors.Join(errl...)
	}
	tm := time.Now()
	threads := 0
	for _, p := range t.procs {
		if !holders[p.pid] || p.stopSig != 0 {
			continue
		}
		p.installTrampoline(p.smaps)
		if p.tramp == nil {
			continue
		}
		parked = append(parked, p)
		for _, th := range p.threads {
			if err := th.t.Park(parkTime); err != nil {
				return nil, errors.Join(err, unpark())
			}
			th.parked = true
			threads++
		}
	}
	if threads > 0 {
		t.log.Debug("threads parked", "threads", threads, "took", time.Since(tm))
	}
	return unpark, nil
}

// unpark lets the parked threads of p go back to their stop, and puts
// back what parking took: the trampoline, the stack bytes below each red
// zone.
func (p *process) unpark() error {
	var errl []error
	for _, th := range p.threads {
		if th.parked {
			th.parked = false
			errl = append(errl, th.t.Unpark())
		}
	}
	errl = append(errl, p.removeTrampoline())
	for _, th := range p.threads {
		errl = append(errl, th.putBackScratch())
	}
	return errors.Join(errl...)
}

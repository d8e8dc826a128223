package feature

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/errs"
)

// ErrNotSupported is wrapped by every error of a probe that found the
// kernel lacks the feature (too old, or built without the option). It is
// errs.ErrNotSupported, the one dump and restore wrap too.
var ErrNotSupported = errs.ErrNotSupported

// ErrNotPermitted is wrapped by every error of a probe that found the
// feature present but out of the caller's reach: a missing capability, or a
// sysctl that forbids it.
var ErrNotPermitted = errors.New("not permitted")

// Need says which of cryo's jobs cannot work without a feature.
type Need uint8

// What a probe is required for. A probe required for neither reports an
// optional capability (a faster path, or a rarely needed kind of state).
const (
	ForDump Need = 1 << iota
	ForRestore
)

// Probe is one kernel feature and the test that exercises it.
type Probe struct {
	// Name is the stable identifier `cryo check --feature` takes.
	Name string
	// Description says in a few words what is exercised.
	Description string
	// NeededFor says what of cryo stops working without it.
	NeededFor string
	// MinKernel is the first Linux release that has the feature; empty when
	// it is not a matter of version (a sysctl, the caller's privileges).
	// Only tests compare it with the running kernel: probes never do.
	MinKernel string
	// Config names the kernel build options the feature also depends on
	// (comma-separated), when a kernel new enough may still lack it; empty
	// if none.
	Config string
	// Required says which jobs cannot run without the feature.
	Required Need

	fn func() (string, error)

	mu     sync.Mutex
	done   bool
	detail string
	err    error
}

// Check runs the probe the first time and returns its outcome: nil, an
// error wrapping ErrNotSupported or ErrNotPermitted, or another error when
// the probe could not tell. Conclusive outcomes are cached.
func (p *Probe) Check() error {
	_, err := p.Result()
	return err
}

// Result is Check with the probe's detail line ("xstate 2688 bytes, ...").
func (p *Probe) Result() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return p.detail, p.err
	}
	detail, err := p.fn()
	if err != nil {
		err = p.annotate(err)
	}
	if err == nil || conclusive(err) {
		p.done, p.detail, p.err = true, detail, err
	}
	return detail, err
}

// forget drops a cached outcome (tests measure fresh runs).
func (p *Probe) forget() {
	p.mu.Lock()
	p.done, p.detail, p.err = false, "", nil
	p.mu.Unlock()
}

func (p *Probe) annotate(err error) error {
	switch {
	case errors.Is(err, ErrNotSupported) && p.MinKernel != "" && p.Config != "":
		return fmt.Errorf("%s needs Linux %s built with %s: %w", p.Name, p.MinKernel, p.Config, err)
	case errors.Is(err, ErrNotSupported) && p.MinKernel != "":
		return fmt.Errorf("%s needs Linux %s or later: %w", p.Name, p.MinKernel, err)
	case errors.Is(err, ErrNotSupported) && p.Config != "":
		return fmt.Errorf("%s needs a kernel built with %s: %w", p.Name, p.Config, err)
	}
	return fmt.Errorf("%s: %w", p.Name, err)
}

func conclusive(err error) bool {
	return errors.Is(err, ErrNotSupported) || errors.Is(err, ErrNotPermitted)
}

// Lookup returns the probe called name, or nil.
func Lookup(name string) *Probe {
	for _, p := range Probes {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Names lists the probes' names in table order.
func Names() []string {
	out := make([]string, len(Probes))
	for i, p := range Probes {
		out[i] = p.Name
	}
	return out
}

// classify turns the errnos that mean "the kernel does not know this"
// into ErrNotSupported, EPERM and EACCES into ErrNotPermitted with why, and
// leaves anything else as a probe error; op names the call that failed.
func classify(op string, err error, why string, unknown ...unix.Errno) error {
	if err == nil {
		return nil
	}
	for _, e := range unknown {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %s: %w", ErrNotSupported, op, err)
		}
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		if why != "" {
			return fmt.Errorf("%w: %s: %w (%s)", ErrNotPermitted, op, err, why)
		}
		return fmt.Errorf("%w: %s: %w", ErrNotPermitted, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Status is a probe's outcome in one word.
type Status string

// The four outcomes of a probe as reports show them.
const (
	Supported    Status = "supported"
	Unsupported  Status = "unsupported"
	NotPermitted Status = "not-permitted"
	ProbeError   Status = "error"
)

// StatusOf classifies an outcome of Check.
func StatusOf(err error) Status {
	switch {
	case err == nil:
		return Supported
	case errors.Is(err, ErrNotSupported):
		return Unsupported
	case errors.Is(err, ErrNotPermitted):
		return NotPermitted
	}
	return ProbeError
}

// Report is the outcome of one probe as `cryo check` prints it.
type Report struct {
	Name        string   `json:"name"`
	Status      Status   `json:"status"`
	Detail      string   `json:"detail,omitempty"`
	Error       string   `json:"error,omitempty"`
	Description string   `json:"description"`
	NeededFor   string   `json:"needed_for"`
	MinKernel   string   `json:"min_kernel,omitempty"`
	Config      string   `json:"config,omitempty"`
	RequiredFor []string `json:"required_for,omitempty"`
	Micros      int64    `json:"duration_us"`

	err error
}

// Err is the outcome of Check.
func (r *Report) Err() error { return r.err }

// Run checks p and reports the outcome with how long it took.
func Run(p *Probe) *Report {
	start := time.Now()
	detail, err := p.Result()
	r := &Report{
		Name: p.Name, Status: StatusOf(err), Detail: detail,
		Description: p.Description, NeededFor: p.NeededFor,
		MinKernel: p.MinKernel, Config: p.Config,
		Micros: time.Since(start).Microseconds(), err: err,
	}
	if p.Required&ForDump != 0 {
		r.RequiredFor = append(r.RequiredFor, "dump")
	}
	if p.Required&ForRestore != 0 {
		r.RequiredFor = append(r.RequiredFor, "restore")
	}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// RunAll checks every probe, in table order.
func RunAll() []*Report {
	out := make([]*Report, len(Probes))
	for i, p := range Probes {
		out[i] = Run(p)
	}
	return out
}

// Can says whether every probe required for need succeeded in reports.
func Can(reports []*Report, need Need) bool {
	for _, r := range reports {
		p := Lookup(r.Name)
		if p != nil && p.Required&need != 0 && r.Status != Supported {
			return false
		}
	}
	return true
}

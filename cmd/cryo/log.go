package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// logOptions are the CRIU-compatible logging flags shared by dump and restore.
type logOptions struct {
	verbosity int
	file      string
}

func (o *logOptions) register(fs *pflag.FlagSet) {
	fs.IntVar(&o.verbosity, "verbosity", 2, "log level 0-4 (-v0 .. -v4, or -v, -vv ...)")
	fs.StringVarP(&o.file, "log-file", "o", "", "log file, relative to the image directory as in criu")
}

// open returns a logger and a closer. Level mapping follows criu: 0 errors
// only... 4 everything.
func (o *logOptions) open(dir string) (*slog.Logger, func(), error) {
	level := slog.LevelError
	switch {
	case o.verbosity >= 4:
		level = slog.LevelDebug
	case o.verbosity == 3:
		level = slog.LevelInfo
	case o.verbosity == 2:
		level = slog.LevelWarn
	}
	var w io.Writer = os.Stderr
	closer := func() {}
	if o.file != "" {
		p := o.file
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return nil, nil, err
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, nil, err
		}
		w, closer = f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), closer, nil
}

// isTerminal reports whether stderr is a terminal: progress is shown only then.
func isTerminal() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// CRIU's flags that scripts pass and that change nothing cryo does, taken
// so that a criu command line runs unchanged. Each says in its help what
// cryo does instead.
func registerCompat(f *pflag.FlagSet, dump bool) {
	var ignored bool
	if dump {
		f.BoolVar(&ignored, "link-remap", false, "accepted for criu: cryo keeps a deleted file's contents in the image (ghost file) and links nothing back")
		f.BoolVar(&ignored, "force-irmap", false, "accepted for criu: cryo finds inotify watches by their file handle, never by a path scan")
	}
	f.BoolVar(&ignored, "evasive-devices", false, "accepted for criu: cryo opens a device file by the path it was dumped with, or fails naming it")
}

// sizeValue is a byte count given as criu gives one: a number with an
// optional K, M or G suffix (powers of 1024).
type sizeValue struct{ n *int64 }

func (s sizeValue) String() string {
	if s.n == nil {
		return "0"
	}
	return strconv.FormatInt(*s.n, 10)
}

func (s sizeValue) Set(v string) error {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "K"), strings.HasSuffix(v, "k"):
		mult = 1 << 10
	case strings.HasSuffix(v, "M"), strings.HasSuffix(v, "m"):
		mult = 1 << 20
	case strings.HasSuffix(v, "G"), strings.HasSuffix(v, "g"):
		mult = 1 << 30
	}
	if mult != 1 {
		v = v[:len(v)-1]
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size (a number of bytes, optionally with K, M or G)", v)
	}
	*s.n = n * mult
	return nil
}

func (s sizeValue) Type() string { return "size" }

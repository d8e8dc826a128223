package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The in-process baselines cryo is compared with. They move the same number
// of bytes as cryo does, through the same directory, in the same run.
//
// The source (write) and destination (read) of the file I/O is one warm
// (already faulted-in) anonymous buffer of bufSize bytes, used round robin
// in ioChunk pieces: it is larger than any CPU cache, so the copies go to
// and from memory as cryo's do, without the bench holding another GiB.

const (
	bufSize = 64 << 20
	ioChunk = 4 << 20
)

type baselines struct {
	buf []byte
}

func newBaselines() (*baselines, error) {
	buf, err := unix.Mmap(-1, 0, bufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("mmap baseline buffer: %w", err)
	}
	for i := range buf {
		buf[i] = byte(i*7 + i>>12)
	}
	return &baselines{buf: buf}, nil
}

// write times a plain sequential write of n bytes to a new file in dir
// (create, write in 4 MiB pieces, close). The file is removed afterwards,
// outside the timing.
func (b *baselines) write(dir string, n int64) (time.Duration, error) {
	p := filepath.Join(dir, "baseline-write.tmp")
	t0 := time.Now()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	for off := int64(0); off < n; {
		k := min(int64(ioChunk), n-off)
		i := off % bufSize
		if _, err := f.Write(b.buf[i : i+k]); err != nil {
			f.Close()
			os.Remove(p)
			return 0, err
		}
		off += k
	}
	err = f.Close()
	d := time.Since(t0)
	os.Remove(p)
	return d, err
}

// read times reading files whole, in 4 MiB pieces, into the warm buffer.
// It returns the bytes read.
func (b *baselines) read(files []string) (time.Duration, int64, error) {
	var total int64
	t0 := time.Now()
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return 0, 0, err
		}
		for {
			i := total % bufSize
			n, err := f.Read(b.buf[i:min(i+ioChunk, bufSize)])
			total += int64(n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				f.Close()
				return 0, 0, err
			}
		}
		f.Close()
	}
	return time.Since(t0), total, nil
}

// touch times mapping n bytes of fresh anonymous memory (not Go heap) and
// copying the warm buffer into all of it, as a restore must fill the new
// process's memory. Like the targets' memory it is MADV_NOHUGEPAGE: 4 KiB
// page faults. Unmapping is not timed.
func (b *baselines) touch(n int64) (time.Duration, error) {
	t0 := time.Now()
	m, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("mmap %d fresh bytes: %w", n, err)
	}
	if err := unix.Madvise(m, unix.MADV_NOHUGEPAGE); err != nil {
		unix.Munmap(m)
		return 0, err
	}
	for off := int64(0); off < n; {
		k := min(int64(bufSize), n-off)
		copy(m[off:off+k], b.buf[:k])
		off += k
	}
	d := time.Since(t0)
	return d, unix.Munmap(m)
}

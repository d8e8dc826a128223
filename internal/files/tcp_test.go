package files

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	tcpstream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"

	"github.com/cryo-project/cryo/internal/image"
	"github.com/cryo-project/cryo/internal/imageset"
)

// tcpStreamImage commits an image holding tcp-stream-7.img: st, then raw.
func tcpStreamImage(t testing.TB, st *tcpstream.TcpStreamEntry, raw []byte) *image.Dir {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img")
	dir, err := image.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f := imageset.TCPStream(7)
	w, err := dir.Create(f.Name, f.Magic)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(st); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRaw(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := imageset.Write(dir, imageset.Inventory, &inventory.InventoryEntry{ImgVersion: proto.Uint32(2)}); err != nil {
		t.Fatal(err)
	}
	if err := dir.Commit(); err != nil {
		t.Fatal(err)
	}
	rd, err := image.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return rd
}

func streamEntry(inq, outq, unsq uint32) *tcpstream.TcpStreamEntry {
	z := proto.Uint32(0)
	return &tcpstream.TcpStreamEntry{InqLen: proto.Uint32(inq), InqSeq: proto.Uint32(1000), OutqLen: proto.Uint32(outq), OutqSeq: proto.Uint32(2000),
		OptMask: z, SndWscale: z, MssClamp: proto.Uint32(1460), UnsqLen: proto.Uint32(unsq)}
}

// TestLoadTCPStream: the queues come back as CRIU lays them out, the
// receive queue's bytes first; lengths the file cannot hold, or more
// unsent bytes than the send queue has, are a corrupt image.
func TestLoadTCPStream(t *testing.T) {
	s, err := loadTCPStream(tcpStreamImage(t, streamEntry(3, 5, 2), []byte("abcdefgh")), 7)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.inq) != "abc" || string(s.outq) != "defgh" {
		t.Errorf("queues %q %q, want \"abc\" \"defgh\"", s.inq, s.outq)
	}
	for _, c := range []struct {
		name string
		st   *tcpstream.TcpStreamEntry
	}{
		{"receive queue past the end", streamEntry(9, 0, 0)},
		{"send queue past the end", streamEntry(3, 6, 0)},
		{"more unsent than queued", streamEntry(3, 5, 6)},
	} {
		_, err := loadTCPStream(tcpStreamImage(t, c.st, []byte("abcdefgh")), 7)
		if !errors.Is(err, image.ErrImageCorrupt) {
			t.Errorf("%s: %v, want ErrImageCorrupt", c.name, err)
		}
	}
}

// FuzzLoadTCPStream: whatever the lengths say, loading never reads past
// the file nor allocates more than it holds, and what it returns is what
// the file holds.
func FuzzLoadTCPStream(f *testing.F) {
	f.Add(uint32(3), uint32(5), uint32(2), []byte("abcdefgh"))
	f.Add(uint32(0), uint32(0), uint32(0), []byte{})
	f.Add(uint32(1<<31), uint32(1), uint32(0), []byte("x"))
	f.Fuzz(func(t *testing.T, inq, outq, unsq uint32, raw []byte) {
		s, err := loadTCPStream(tcpStreamImage(t, streamEntry(inq, outq, unsq), raw), 7)
		if err != nil {
			return
		}
		if uint64(len(s.inq))+uint64(len(s.outq)) > uint64(len(raw)) || !bytes.Equal(append(append([]byte(nil), s.inq...), s.outq...), raw[:len(s.inq)+len(s.outq)]) {
			t.Fatalf("queues %d+%d bytes from %d", len(s.inq), len(s.outq), len(raw))
		}
	})
}

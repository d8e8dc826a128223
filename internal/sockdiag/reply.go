package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// Limits on what one query reads and holds. A reply is the kernel's, but
// its size is set by the namespace's sockets, which any process can create
// by the hundred thousand; these bounds stop a pathological namespace from
// making cryo allocate without end.
const (
	// MaxSockets bounds the sockets one reply may describe (the messages
	// of one dump, those with inode 0 included). A million TCP sockets is
	// a very busy host; more fails with ErrTooLarge.
	MaxSockets = 1 << 20

	// MaxReplyBytes bounds the bytes of one reply, all datagrams together.
	// At ~100 to ~600 bytes per socket (a TCP socket with every extension)
	// it is more than MaxSockets needs.
	MaxReplyBytes = 1 << 30

	// MaxIcons bounds the pending connections listed for one unix
	// listener. The kernel's attribute length is 16 bits, so it cannot
	// describe more ((65535-4)/4); a backlog raised above that (somaxconn
	// is 4096 by default) makes the kernel write an attribute whose
	// length wrapped, which fails to parse.
	MaxIcons = (1<<16 - 1 - unix.SizeofNlAttr) / 4

	// recvBufSize is the buffer one datagram is read into. The kernel
	// sizes a dump's datagrams after the reader's buffer but caps them at
	// 32 KiB (netlink_recvmsg's max_recvmsg_len); a bigger datagram is
	// refused rather than read truncated.
	recvBufSize = 64 << 10
)

// reply follows one dump reply through the datagrams that carry it.
type reply struct {
	off     int64  // offset in the reply of the next datagram
	seq     uint32 // the request's sequence number; 0 accepts any (captured replies)
	sockets int
	// done says the kernel has sent all it will for the request: the
	// NLMSG_DONE, or an NLMSG_ERROR refusing it.
	done bool
}

// feed hands each socket message of datagram b to sock, with its offset
// in the reply and its payload (the family's diag_msg and attributes).
func (r *reply) feed(b []byte, sock func(off int64, m []byte) error) error {
	for i := 0; i < len(b); {
		off := r.off + int64(i)
		if r.done {
			return &ParseError{Offset: off, Err: fmt.Errorf("%d bytes after NLMSG_DONE", len(b)-i)}
		}
		if len(b)-i < unix.NLMSG_HDRLEN {
			return &ParseError{Offset: off, Err: fmt.Errorf("%d bytes left, short of a netlink header", len(b)-i)}
		}
		h := b[i:]
		l := binary.NativeEndian.Uint32(h)
		typ := binary.NativeEndian.Uint16(h[4:])
		seq := binary.NativeEndian.Uint32(h[8:])
		if l < unix.NLMSG_HDRLEN || uint64(l) > uint64(len(b)-i) {
			return &ParseError{Offset: off, Err: fmt.Errorf("netlink message of %d bytes, %d left in the datagram", l, len(b)-i)}
		}
		if r.seq != 0 && seq != r.seq {
			return &ParseError{Offset: off, Err: fmt.Errorf("answer to request %d, not %d", seq, r.seq)}
		}
		m := h[unix.NLMSG_HDRLEN:l]
		switch typ {
		case unix.NLMSG_DONE:
			// netlink_dump puts the dump's own result in NLMSG_DONE:
			// an error there (e.g. ENOENT from a handler that is not
			// built) ends a reply that otherwise looks complete.
			r.done = true
			if len(m) >= 4 {
				if err := kernelError(off, int32(binary.NativeEndian.Uint32(m))); err != nil {
					return err
				}
			}
		case unix.NLMSG_ERROR:
			if len(m) < 4 {
				return &ParseError{Offset: off, Err: fmt.Errorf("NLMSG_ERROR of %d bytes", len(m))}
			}
			// The request was refused (netlink_dump_start never ran):
			// nothing follows.
			r.done = true
			e := int32(binary.NativeEndian.Uint32(m))
			if e == 0 {
				// An acknowledgement: never asked for (no NLM_F_ACK).
				return &ParseError{Offset: off, Err: errors.New("an acknowledgement in a dump")}
			}
			return kernelError(off, e)
		case unix.NLMSG_NOOP:
		case unix.SOCK_DIAG_BY_FAMILY:
			if r.sockets++; r.sockets > MaxSockets {
				return fmt.Errorf("sock_diag reply (byte %d): more than %d sockets: %w", off, MaxSockets, ErrTooLarge)
			}
			if err := sock(off+unix.NLMSG_HDRLEN, m); err != nil {
				return err
			}
		default:
			return &ParseError{Offset: off, Err: fmt.Errorf("netlink message of type %d", typ)}
		}
		i += min(nlmsgAlign(int(l)), len(b)-i)
	}
	r.off += int64(len(b))
	if r.off > MaxReplyBytes {
		return fmt.Errorf("sock_diag reply: more than %d bytes: %w", MaxReplyBytes, ErrTooLarge)
	}
	return nil
}

// kernelError turns the errno of an NLMSG_ERROR or NLMSG_DONE into an
// error wrapping it, or nil for 0. Only 1..4095 is an errno: the kernel
// encodes errors as -errno; anything else is not its doing.
func kernelError(off int64, e int32) error {
	switch {
	case e == 0:
		return nil
	case e < 0 && e >= -4095:
		return fmt.Errorf("sock_diag reply (byte %d): the kernel answered: %w", off, unix.Errno(-e))
	}
	return &ParseError{Offset: off, Err: fmt.Errorf("error code %d", e)}
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// parseReply parses a whole reply held in b, as ParseUnix & co. take it:
// the datagrams of one dump, concatenated (netlink messages delimit
// themselves, so the datagram boundaries do not matter).
func parseReply[T any](b []byte, parse func(off int64, m []byte) (T, error)) ([]T, error) {
	if len(b) > MaxReplyBytes {
		return nil, fmt.Errorf("sock_diag reply of %d bytes: %w", len(b), ErrTooLarge)
	}
	var out []T
	r := reply{}
	err := r.feed(b, func(off int64, m []byte) error {
		v, err := parse(off, m)
		if err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !r.done {
		return nil, &ParseError{Offset: int64(len(b)), Err: errors.New("the reply ends before NLMSG_DONE")}
	}
	return out, nil
}

// attrs calls f for each netlink attribute in b, which starts at offset
// off of the reply, with the attribute's offset, type and payload.
func attrs(off int64, b []byte, f func(off int64, typ uint16, v []byte) error) error {
	for i := 0; i < len(b); {
		if len(b)-i < unix.SizeofNlAttr {
			return &ParseError{Offset: off + int64(i), Err: fmt.Errorf("%d bytes left, short of an attribute header", len(b)-i)}
		}
		l := int(binary.NativeEndian.Uint16(b[i:]))
		// The flag bits are not part of the type; sock_diag sets
		// NLA_F_NESTED on nothing it sends today, but may.
		typ := binary.NativeEndian.Uint16(b[i+2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofNlAttr || l > len(b)-i {
			return &ParseError{Offset: off + int64(i), Err: fmt.Errorf("attribute %d of %d bytes, %d left", typ, l, len(b)-i)}
		}
		if err := f(off+int64(i), typ, b[i+unix.SizeofNlAttr:i+l]); err != nil {
			return err
		}
		i += min(nlaAlign(l), len(b)-i)
	}
	return nil
}

func nlaAlign(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }

// attrError is the error for attribute typ at off of socket ino.
func attrError(off int64, what string, typ uint16, ino uint32, format string, args ...any) error {
	return &ParseError{Offset: off, Err: fmt.Errorf("%s attribute %d of socket %d: %s", what, typ, ino, fmt.Sprintf(format, args...))}
}

// fixed checks that attribute payload v holds at least n bytes.
func fixed(off int64, what string, typ uint16, ino uint32, v []byte, n int) error {
	if len(v) < n {
		return attrError(off, what, typ, ino, "%d bytes, want %d", len(v), n)
	}
	return nil
}

// header checks that message m holds a family struct of size n and that
// the struct names the family asked about.
func header(off int64, what string, m []byte, n int, family uint8) error {
	if len(m) < n {
		return &ParseError{Offset: off, Err: fmt.Errorf("%s of %d bytes, want %d", what, len(m), n)}
	}
	if m[0] != family {
		return &ParseError{Offset: off, Err: fmt.Errorf("%s of family %d, want %d", what, m[0], family)}
	}
	return nil
}

func cookie(c [2]uint32) uint64 { return uint64(c[0]) | uint64(c[1])<<32 }

// MemInfo is a socket's memory accounting, the u32 array
// sock_diag_put_meminfo writes (SK_MEMINFO_*; include/uapi/linux/sock_diag.h).
// Fields a kernel does not write stay 0.
type MemInfo struct {
	RmemAlloc  uint32 // bytes held by the receive queue
	Rcvbuf     uint32 // SO_RCVBUF
	WmemAlloc  uint32 // bytes sent and not yet freed
	Sndbuf     uint32 // SO_SNDBUF
	FwdAlloc   uint32
	WmemQueued uint32
	Optmem     uint32
	Backlog    uint32
	Drops      uint32
}

func parseMemInfo(off int64, what string, typ uint16, ino uint32, v []byte) (*MemInfo, error) {
	if len(v)%4 != 0 {
		return nil, attrError(off, what, typ, ino, "%d bytes of meminfo, not a whole number of u32", len(v))
	}
	m := &MemInfo{}
	dst := [kabi.SK_MEMINFO_VARS]*uint32{&m.RmemAlloc, &m.Rcvbuf, &m.WmemAlloc, &m.Sndbuf, &m.FwdAlloc, &m.WmemQueued, &m.Optmem, &m.Backlog, &m.Drops}
	for i := 0; i < len(dst) && 4*i < len(v); i++ {
		*dst[i] = binary.NativeEndian.Uint32(v[4*i:])
	}
	return m, nil
}

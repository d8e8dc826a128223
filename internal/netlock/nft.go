package netlock

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/errs"
)

// The key of a set element is saddr . sport . daddr . dport, each field
// padded to a 32-bit register as nf_tables lays out a concatenation.
const (
	key4Len = 4 + 4 + 4 + 4
	key6Len = 16 + 4 + 16 + 4
)

var (
	key4Type = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService, nftables.TypeIPAddr, nftables.TypeInetService)
	key6Type = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService, nftables.TypeIP6Addr, nftables.TypeInetService)
)

// key is one direction of a connection, as a set key.
func key(src, dst netip.AddrPort) []byte {
	a, b := src.Addr().AsSlice(), dst.Addr().AsSlice()
	k := make([]byte, 0, key6Len)
	k = append(k, a...)
	k = append(k, byte(src.Port()>>8), byte(src.Port()), 0, 0)
	k = append(k, b...)
	return append(k, byte(dst.Port()>>8), byte(dst.Port()), 0, 0)
}

// keys makes the set elements of conns: both directions of each, without
// duplicates (both ends of a loopback connection may be in conns), IPv4
// and IPv4-mapped in v4, IPv6 in v6.
func keys(conns []Conn) (v4, v6 [][]byte, err error) {
	seen := map[string]bool{}
	for _, c := range conns {
		l, r := c.Local, c.Remote
		if !l.IsValid() || !r.IsValid() {
			return nil, nil, fmt.Errorf("network lock: connection %v → %v: invalid address", l, r)
		}
		la, ra := l.Addr().Unmap().WithZone(""), r.Addr().Unmap().WithZone("")
		if la.Is4() != ra.Is4() {
			return nil, nil, fmt.Errorf("network lock: connection %v → %v: one end IPv4, the other IPv6", l, r)
		}
		l, r = netip.AddrPortFrom(la, l.Port()), netip.AddrPortFrom(ra, r.Port())
		for _, k := range [][]byte{key(l, r), key(r, l)} {
			if seen[string(k)] {
				continue
			}
			seen[string(k)] = true
			if la.Is4() {
				v4 = append(v4, k)
			} else {
				v6 = append(v6, k)
			}
		}
	}
	return v4, v6, nil
}

// Where each field of the key goes: nf_tables' registers are numbered 1-4
// for the 16-byte ones and 8-23 (NFT_REG32_00-15) for the 32-bit ones
// that overlap them; register 1 is NFT_REG32_00-03.
const (
	reg1       = 1
	reg32Index = 8 // NFT_REG32_00
)

// fieldRegs are the 32-bit register of each field of the key for an
// address of n bytes: the fields follow each other from register 1.
func fieldRegs(n uint32) (saddr, sport, daddr, dport uint32) {
	w := n / 4
	return reg32Index, reg32Index + w, reg32Index + w + 1, reg32Index + 2*w + 1
}

// lockRule is the rule that drops a family's packets whose 4-tuple is in
// set: meta nfproto, meta l4proto tcp, the four fields, the lookup.
func lockRule(t *nftables.Table, c *nftables.Chain, set *nftables.Set, nfproto byte, addrOff [2]uint32, addrLen uint32) *nftables.Rule {
	sa, sp, da, dp := fieldRegs(addrLen)
	return &nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: sa, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff[0], Len: addrLen},
		&expr.Payload{DestRegister: sp, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Payload{DestRegister: da, Base: expr.PayloadBaseNetworkHeader, Offset: addrOff[1], Len: addrLen},
		&expr.Payload{DestRegister: dp, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}}
}

// passRule accepts what carries PassMark, before the lock rules.
func passRule(t *nftables.Table, c *nftables.Chain) *nftables.Rule {
	return &nftables.Rule{Table: t, Chain: c, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(PassMark)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}}
}

// maxElemBytes bounds the elements of one message: a netlink attribute's
// length is 16 bits, and the list of elements is one attribute.
const maxElemBytes = 60000

// buildMu serializes the building of batches: google/nftables numbers
// sets from one package-wide counter without a lock.
var buildMu sync.Mutex

// createTable makes the lock's table in one batch: the kernel commits all
// of it or nothing.
func createTable(name string, v4, v6 [][]byte) error {
	// Everything goes in one sendmsg, which the socket's send buffer must
	// hold: about 12 bytes of headers per element beside its key.
	size := 64 << 10
	for _, k := range slices.Concat(v4, v6) {
		size += len(k) + 16
	}
	c, err := nftables.New(nftables.WithSockOptions(func(nc *netlink.Conn) error { return sendBuffer(nc, size) }))
	if err != nil {
		return classify("netlink", err)
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	t := c.CreateTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	s4 := &nftables.Set{Table: t, Name: "conns4", KeyType: key4Type, Concatenation: true, KeyByteOrder: binaryutil.BigEndian}
	s6 := &nftables.Set{Table: t, Name: "conns6", KeyType: key6Type, Concatenation: true, KeyByteOrder: binaryutil.BigEndian}
	for _, s := range []struct {
		set  *nftables.Set
		keys [][]byte
		klen int
	}{{s4, v4, key4Len}, {s6, v6, key6Len}} {
		if err := c.AddSet(s.set, nil); err != nil {
			return err
		}
		per := maxElemBytes / (s.klen + 16)
		for chunk := range slices.Chunk(s.keys, per) {
			els := make([]nftables.SetElement, len(chunk))
			for i, k := range chunk {
				els[i].Key = k
			}
			if err := c.SetAddElements(s.set, els); err != nil {
				return err
			}
		}
	}
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
		prio *nftables.ChainPriority
	}{
		// See the package doc (Rules) for the priorities.
		{"input", nftables.ChainHookInput, nftables.ChainPriorityRef(200)},
		{"output", nftables.ChainHookOutput, nftables.ChainPriorityRaw},
	} {
		ch := c.AddChain(&nftables.Chain{Name: h.name, Table: t, Type: nftables.ChainTypeFilter, Hooknum: h.hook, Priority: h.prio})
		c.AddRule(passRule(t, ch))
		c.AddRule(lockRule(t, ch, s4, unix.NFPROTO_IPV4, [2]uint32{12, 16}, 4))
		c.AddRule(lockRule(t, ch, s6, unix.NFPROTO_IPV6, [2]uint32{8, 24}, 16))
	}
	if err := c.Flush(); err != nil {
		return classify("create table "+name, err)
	}
	return nil
}

// sendBuffer makes room for a batch of size bytes. SO_SNDBUFFORCE passes
// net.core.wmem_max with CAP_NET_ADMIN, which making tables needs anyway.
func sendBuffer(nc *netlink.Conn, size int) error {
	rc, err := nc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size)
		if serr != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, size)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("send buffer of %d bytes: %w", size, serr)
	}
	return nil
}

// deleteTable removes a table and everything in it, in one message; a
// table that is gone already is not an error.
func deleteTable(name string) error {
	c, err := nftables.New()
	if err != nil {
		return classify("netlink", err)
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return classify("delete table "+name, err)
	}
	return nil
}

// listTables names the inet tables of the network namespace.
func listTables() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, classify("netlink", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, classify("list nftables tables", err)
	}
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	slices.Sort(out)
	return out, nil
}

// classify wraps ErrNotSupported around the errnos of a kernel without
// nf_tables (no NETLINK_NETFILTER, no nf_tables subsystem, no inet family).
func classify(op string, err error) error {
	for _, e := range []unix.Errno{unix.EPROTONOSUPPORT, unix.EAFNOSUPPORT, unix.EOPNOTSUPP} {
		if errors.Is(err, e) {
			return fmt.Errorf("%s: %w (%w: the kernel needs CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET)", op, err, errs.ErrNotSupported)
		}
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%s: %w (nf_tables needs CAP_NET_ADMIN)", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unavailable says whether err means this process can see no lock at all:
// no nf_tables here, or no CAP_NET_ADMIN.
func unavailable(err error) bool {
	return errors.Is(err, errs.ErrNotSupported) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)
}

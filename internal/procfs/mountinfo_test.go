package procfs

import (
	"strings"
	"testing"
)

func TestParseMountinfoUnshare(t *testing.T) {
	ms, err := ParseMountinfo(readTestdata(t, "unshare.mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "len", len(ms), 23)
	eq(t, "root", ms[0], Mount{
		ID: 43, ParentID: 42, Dev: Dev{254, 0}, Root: "/", MountPoint: "/",
		Options: "rw,relatime", Optional: []string{"shared:1"}, Shared: 1,
		FSType: "ext4", Source: "/dev/vda", SuperOptions: "rw,discard,resv_strict,resuid=65534,resgid=65534",
	})
	n := len(ms)
	tmpfs := Mount{ID: 63, ParentID: 43, Dev: Dev{0, 39}, Root: "/", MountPoint: "/tmp/procfs-gen/mnt x",
		Options: "rw,relatime", Optional: []string{"shared:21"}, Shared: 21,
		FSType: "tmpfs", Source: "src with space", SuperOptions: "rw,size=1024k,mode=700"}
	eq(t, "tmpfs", ms[n-4], tmpfs)

	private := tmpfs
	private.ID, private.MountPoint, private.Optional, private.Shared = 64, "/tmp/procfs-gen/tab\tdir", nil, 0
	eq(t, "private bind", ms[n-3], private)

	slave := tmpfs
	slave.ID, slave.MountPoint, slave.Optional, slave.Shared, slave.Master = 65, `/tmp/procfs-gen/slave\dir`, []string{"master:21"}, 0, 21
	eq(t, "slave bind", ms[n-2], slave)

	sub := tmpfs
	sub.ID, sub.ParentID, sub.Root, sub.MountPoint = 66, 65, "/sub", `/tmp/procfs-gen/slave\dir`
	eq(t, "sub bind", ms[n-1], sub)
}

func TestParseMountinfoFields(t *testing.T) {
	ms, err := ParseMountinfo([]byte("1 0 8:1 / / rw shared:2 master:3 propagate_from:4 unbindable future:x - fuse.sshfs u@h:/a\\134b rw\n" +
		"2 1 0:5 / /x rw - tmpfs none \n"))
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	eq(t, "propagation", [4]any{m.Shared, m.Master, m.PropagateFrom, m.Unbindable}, [4]any{2, 3, 4, true})
	eq(t, "Optional", m.Optional, []string{"shared:2", "master:3", "propagate_from:4", "unbindable", "future:x"})
	eq(t, "FSType", m.FSType, "fuse.sshfs")
	eq(t, "Source", m.Source, `u@h:/a\b`)
	eq(t, "empty super options", ms[1].SuperOptions, "")
}

func TestParseMountinfoErrors(t *testing.T) {
	const good = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
	for _, c := range []struct {
		name, in string
		msg      string
	}{
		{"id", "x 0 8:1 / / rw - ext4 /dev/sda1 rw\n", "bad mount id"},
		{"parent", "1 x 8:1 / / rw - ext4 /dev/sda1 rw\n", "bad parent id"},
		{"dev hex", "1 0 8:1f / / rw - ext4 /dev/sda1 rw\n", "bad major:minor"},
		{"escape short", "1 0 8:1 / /a\\04 rw - ext4 /dev/sda1 rw\n", "bad mount point"},
		{"escape range", "1 0 8:1 / /a\\777 rw - ext4 /dev/sda1 rw\n", "bad mount point"},
		{"escape digit", "1 0 8:1 /\\08a / rw - ext4 /dev/sda1 rw\n", "bad root"},
		{"no separator", "1 0 8:1 / / rw shared:1 ext4 /dev/sda1 rw\n", "missing '-'"},
		{"shared", "1 0 8:1 / / rw shared: - ext4 /dev/sda1 rw\n", "bad optional field"},
		{"master", "1 0 8:1 / / rw master - ext4 /dev/sda1 rw\n", "bad optional field"},
		{"no fstype", "1 0 8:1 / / rw -\n", "bad filesystem type"},
		{"no source", "1 0 8:1 / / rw - ext4\n", "bad source"},
		{"trailing", "1 0 8:1 / / rw - ext4 /dev/sda1 rw extra\n", "trailing field"},
		{"no options", "1 0 8:1 / /\n", "missing mount options"},
		{"many optional", "1 0 8:1 / / rw" + strings.Repeat(" x", 17) + " - ext4 s rw\n", "optional fields"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseMountinfo([]byte(good + c.in))
			pe := wantParseError(t, err, "mountinfo", 2, int64(len(good)))
			if !strings.Contains(pe.Error(), c.msg) {
				t.Errorf("error %q does not mention %q", pe, c.msg)
			}
		})
	}
}

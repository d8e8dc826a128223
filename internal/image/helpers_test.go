package image_test

import (
	"strconv"
	"syscall"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
)

func strconvHex(v uint64) string { return strconv.FormatUint(v, 16) }

func umask(m int) int { return syscall.Umask(m) }

func imagetestGhost() *ghost_file.GhostFileEntry {
	return &ghost_file.GhostFileEntry{Uid: u32(0), Gid: u32(0), Mode: u32(syscall.S_IFREG | 0o600)}
}

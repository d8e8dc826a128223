package feature

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cryo-project/cryo/internal/kabi"
)

// probeMsgCopy sends a message to a private System V queue of cryo's own
// and reads it back with msgrcv(MSG_COPY), which leaves it queued: how the
// dump reads a queue without emptying it. Without CONFIG_CHECKPOINT_RESTORE
// MSG_COPY fails with ENOSYS.
func probeMsgCopy() (string, error) {
	id, err := kabi.MsgGet(unix.IPC_PRIVATE, unix.IPC_CREAT|0o600)
	if err != nil {
		return "", classify("msgget", err, "", unix.ENOSYS)
	}
	defer kabi.MsgRemove(id)
	msg := []byte("\x07\x00\x00\x00\x00\x00\x00\x00cryo")
	if err := kabi.MsgSnd(id, msg, unix.IPC_NOWAIT); err != nil {
		return "", fmt.Errorf("msgsnd: %w", err)
	}
	buf := make([]byte, 64)
	for range 2 { // twice: the first copy must not have taken it
		n, err := kabi.MsgRcv(id, buf, 0, unix.IPC_NOWAIT|kabi.MSG_COPY)
		if errors.Is(err, unix.ENOSYS) {
			return "", classify("msgrcv(MSG_COPY)", err, "", unix.ENOSYS)
		}
		if err != nil {
			return "", fmt.Errorf("msgrcv(MSG_COPY): %w", err)
		}
		if binary.NativeEndian.Uint64(buf) != 7 || !bytes.Equal(buf[8:8+n], msg[8:]) {
			return "", fmt.Errorf("msgrcv(MSG_COPY) read type %d %q", binary.NativeEndian.Uint64(buf), buf[8:8+n])
		}
	}
	return "", nil
}

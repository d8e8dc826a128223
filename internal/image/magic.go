package image

import (
	"fmt"
	"sync"

	"github.com/checkpoint-restore/go-criu/v8/magic"
)

var magics = sync.OnceValue(magic.LoadMagic)

// header returns the magic words that open an image of the given type:
// CRIU puts IMG_COMMON before every image but inventory.img (its "image
// version" marker comes alone) and the service images, which carry
// IMG_SERVICE instead.
func header(name string) ([]uint32, error) {
	m := magics()
	v, ok := m.ByName[name]
	if !ok || name == "IMG_COMMON" || name == "IMG_SERVICE" {
		return nil, fmt.Errorf("unknown image magic %q", name)
	}
	switch name {
	case "INVENTORY":
		return []uint32{uint32(v)}, nil
	case "STATS", "IRMAP_CACHE":
		return []uint32{uint32(m.ByName["IMG_SERVICE"]), uint32(v)}, nil
	}
	return []uint32{uint32(m.ByName["IMG_COMMON"]), uint32(v)}, nil
}

// magicName names a magic value for error messages.
func magicName(v uint32) string {
	if n, ok := magics().ByValue[uint64(v)]; ok {
		return n
	}
	return fmt.Sprintf("%#08x", v)
}

package procfs

import (
	"os"
	"strings"
)

// procfs is where /proc text is parsed.
func Children(pid string) []string {
	b, _ := os.ReadFile("/proc/" + pid + "/task/" + pid + "/children")
	return strings.Fields(string(b))
}

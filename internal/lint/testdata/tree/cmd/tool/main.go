package main

import (
	"os"
	"strings"
)

func main() {
	b, _ := os.ReadFile("/proc/self/stat")
	_, _, _ = strings.Cut(string(b), " ") // want procparse
}

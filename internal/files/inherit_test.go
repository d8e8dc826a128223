package files

import "testing"

func TestParseInheritFd(t *testing.T) {
	for _, tc := range []struct {
		in  string
		fd  int
		key string
		ok  bool
	}{
		{"fd[3]:pipe:[1234]", 3, "pipe:[1234]", true},
		{"fd[10]:socket:[5]", 10, "socket:[5]", true},
		{"fd[3]", 0, "", false},
		{"3:pipe:[1]", 0, "", false},
		{"fd[-1]:pipe:[1]", 0, "", false},
		{"fd[99999999]:pipe:[1]", 0, "", false},
		{"fd[3]:", 0, "", false},
	} {
		fd, key, err := ParseInheritFd(tc.in)
		if (err == nil) != tc.ok || fd != tc.fd || key != tc.key {
			t.Errorf("ParseInheritFd(%q) = %d, %q, %v", tc.in, fd, key, err)
		}
	}
}

package restore

import (
	"reflect"
	"testing"
)

func TestSubtract(t *testing.T) {
	const p = pageSize
	have := [][2]uint64{{2 * p, 2}, {6 * p, 1}, {8 * p, 3}}
	for _, c := range []struct {
		lo, hi uint64
		want   [][2]uint64
	}{
		{0, 12 * p, [][2]uint64{{0, 2 * p}, {4 * p, 6 * p}, {7 * p, 8 * p}, {11 * p, 12 * p}}},
		{2 * p, 4 * p, nil},
		{3 * p, 7 * p, [][2]uint64{{4 * p, 6 * p}}},
		{9 * p, 9 * p, nil},
		{12 * p, 14 * p, [][2]uint64{{12 * p, 14 * p}}},
	} {
		if got := subtract(c.lo, c.hi, have); !reflect.DeepEqual(got, c.want) {
			t.Errorf("subtract(%#x, %#x) = %#x, want %#x", c.lo, c.hi, got, c.want)
		}
	}
}

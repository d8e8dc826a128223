package netlock

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkLock times Take and Release of n connections (half IPv4, half
// IPv6), each reported per operation:
//
//	go test -run '^$' -bench Lock -count 3 ./internal/netlock/
func BenchmarkLock(b *testing.B) {
	if _, err := Probe(); err != nil {
		b.Skip(err)
	}
	for _, n := range []int{100, 1000, 10000} {
		conns := fakeConns(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var take, release time.Duration
			for b.Loop() {
				t0 := time.Now()
				l, err := Take(NFTables, "", conns)
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := l.Release(); err != nil {
					b.Fatal(err)
				}
				take += t1.Sub(t0)
				release += time.Since(t1)
			}
			b.ReportMetric(float64(take.Microseconds())/float64(b.N)/1000, "take-ms/op")
			b.ReportMetric(float64(release.Microseconds())/float64(b.N)/1000, "release-ms/op")
		})
	}
}

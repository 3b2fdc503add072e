package spool

import (
	"testing"

	"github.com/rs/zerolog"
)

// BenchmarkAppend measures durable appends from 64 concurrent publishers,
// with group commit and with one fsync per event.
//
//	go test -run ^$ -bench Append -benchtime 3s ./internal/spool
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"group-commit", Options{}},
		{"fsync-per-event", Options{NoGroupCommit: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := Open(b.TempDir(), tc.opts, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := ev(1)
			e.Data = make([]byte, 1024)
			b.SetParallelism(32) // 2 cores × 32 = 64 publishers
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Append("topic", e, 0); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

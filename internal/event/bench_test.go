package event

import (
	"testing"
	"time"
)

func benchEvent() *Event {
	return &Event{ID: NewID(), Source: "processor", Type: "match_updates", Time: time.Now(),
		ContentType: "application/json", Data: make([]byte, 1024)}
}

// BenchmarkValues is the envelope encoding of every publish (XADD fields).
func BenchmarkValues(b *testing.B) {
	e := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		_ = e.Values()
	}
}

// BenchmarkAppendBinary is the spool's record encoding.
func BenchmarkAppendBinary(b *testing.B) {
	e := benchEvent()
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendBinary(buf[:0], "match.updated", e)
	}
}

func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = NewID()
	}
}

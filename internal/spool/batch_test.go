package spool

import (
	"errors"
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

func openSet(t testing.TB, dir string, max int64) *Set {
	t.Helper()
	s, err := OpenSet(dir, Options{MaxBytes: max}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func evs(from, n int) ([]*event.Event, []byte) {
	out := make([]*event.Event, n)
	for i := range out {
		out[i] = ev(from + i)
	}
	return out, make([]byte, n)
}

func TestSetAppendBatchInOrderDurableAndBounded(t *testing.T) {
	dir := t.TempDir()
	s := openSet(t, dir, 1<<20)
	if err := s.Append("orders#3", ev(0), 0); err != nil {
		t.Fatal(err)
	}
	batch, flags := evs(1, 50)
	flags[7] = FlagUncertain
	if n, err := s.AppendBatch("orders#3", batch, flags); n != 50 || err != nil {
		t.Fatalf("appended %d: %v", n, err)
	}
	if err := s.Append("orders#3", ev(51), 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSet(t, dir, 1<<20) // what was acknowledged is on disk
	defer s.Close()
	recs, err := s.Peek("orders#3", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 52 {
		t.Fatalf("%d records after reopening, want 52", len(recs))
	}
	for i, r := range recs {
		if r.Event.ID != fmt.Sprintf("ev-%05d", i) {
			t.Fatalf("record %d is %s", i, r.Event.ID)
		}
		if r.Uncertain != (i == 8) {
			t.Fatalf("record %d uncertain %v", i, r.Uncertain)
		}
	}

	// A bound that takes part of a batch: the prefix that fits, ErrFull for the rest.
	small := openSet(t, t.TempDir(), 0)
	one := int64(headerSize + len(event.AppendBinary(nil, "t", ev(0))))
	small.opts.MaxBytes = 11*one + one/2
	batch, flags = evs(0, 50)
	n, err := small.AppendBatch("t", batch, flags)
	if n != 11 || !errors.Is(err, ErrFull) {
		t.Fatalf("appended %d (%v), want 11 and ErrFull", n, err)
	}
	var want int64
	for _, e := range batch[:11] {
		want += int64(headerSize + len(event.AppendBinary(nil, "t", e)))
	}
	if st := small.Stats(); st.Bytes != want {
		t.Fatalf("spool holds %d bytes, want %d", st.Bytes, want)
	}
	if n, err := small.AppendBatch("t", batch[11:], flags[11:]); n != 0 || !errors.Is(err, ErrFull) {
		t.Fatalf("full spool took %d (%v)", n, err)
	}
	small.Close()
}

// BenchmarkSpoolBulk compares a 100-event bulk spooled one append at a
// time (an fsync each) with one AppendBatch (one fsync).
func BenchmarkSpoolBulk(b *testing.B) {
	batch, flags := evs(0, 100)
	b.Run("sequential", func(b *testing.B) {
		s := openSet(b, b.TempDir(), 1<<40)
		defer s.Close()
		for b.Loop() {
			for _, e := range batch {
				if err := s.Append("t", e, 0); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("batch", func(b *testing.B) {
		s := openSet(b, b.TempDir(), 1<<40)
		defer s.Close()
		for b.Loop() {
			if _, err := s.AppendBatch("t", batch, flags); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

func ev(i int) *event.Event {
	return &event.Event{ID: fmt.Sprintf("ev-%05d", i), Source: "processor", Type: "t", Time: time.Unix(1700000000, int64(i)).UTC(),
		ContentType: "application/json", Data: fmt.Appendf(nil, `{"i":%d}`, i)}
}

func open(t *testing.T, dir string, opts Options) (*Spool, *bytes.Buffer) {
	t.Helper()
	var logs bytes.Buffer
	s, err := Open(dir, opts, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &logs
}

func appendN(t *testing.T, s *Spool, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := s.Append("topic", ev(i), 0); err != nil {
			t.Fatal(err)
		}
	}
}

func peekIDs(t *testing.T, s *Spool, max int) ([]string, []Record) {
	t.Helper()
	recs, err := s.Peek(max)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.Event.ID)
	}
	return ids, recs
}

func want(from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		ids = append(ids, fmt.Sprintf("ev-%05d", i))
	}
	return ids
}

func TestAppendPeekAckInOrderAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{SegmentBytes: 500})
	appendN(t, s, 0, 50)
	if st := s.Stats(); st.Events != 50 || st.Segments < 3 {
		t.Fatalf("stats: got %+v, want 50 events over several segments", st)
	}
	ids, recs := peekIDs(t, s, 20)
	if fmt.Sprint(ids) != fmt.Sprint(want(0, 20)) {
		t.Fatalf("peek: got %v", ids)
	}
	if recs[3].Topic != "topic" || string(recs[3].Event.Data) != `{"i":3}` || !recs[3].Event.Time.Equal(ev(3).Time) {
		t.Fatalf("record 3: got %+v", recs[3])
	}
	if err := s.Ack(recs); err != nil {
		t.Fatal(err)
	}
	ids, recs = peekIDs(t, s, 1000)
	if fmt.Sprint(ids) != fmt.Sprint(want(20, 50)) {
		t.Fatalf("after ack: got %v", ids)
	}
	if err := s.Ack(recs); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Events != 0 || st.Bytes != 0 || st.Segments != 0 || !s.Empty() {
		t.Fatalf("drained: got %+v", st)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 0 {
		t.Fatalf("drained segments left on disk: %v", segs)
	}
	appendN(t, s, 50, 2) // still writable after a full drain
	if ids, _ := peekIDs(t, s, 10); fmt.Sprint(ids) != fmt.Sprint(want(50, 52)) {
		t.Fatalf("after refill: got %v", ids)
	}
}

func TestReopenResumesAfterDrainPosition(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{SegmentBytes: 300})
	appendN(t, s, 0, 30)
	_, recs := peekIDs(t, s, 12)
	if err := s.Ack(recs); err != nil {
		t.Fatal(err)
	}
	_, _ = peekIDs(t, s, 5) // read but not acknowledged: a crash mid-drain
	s.Close()
	s2, _ := open(t, dir, Options{SegmentBytes: 300})
	if ids, _ := peekIDs(t, s2, 100); fmt.Sprint(ids) != fmt.Sprint(want(12, 30)) {
		t.Fatalf("after reopen: got %v, want 12..29", ids)
	}
	if st := s2.Stats(); st.Events != 18 {
		t.Fatalf("events after reopen: got %d, want 18", st.Events)
	}
}

func TestTornTailIsCutAndCorruptRecordSkipped(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	appendN(t, s, 0, 10)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	b, _ := os.ReadFile(segs[0])
	recSize := len(b) / 10
	// Flip a byte inside record 4's payload, and cut record 9 in half.
	b[4*recSize+headerSize+3] ^= 0xff
	b = b[:9*recSize+recSize/2]
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	s2, logs := open(t, dir, Options{})
	ids, _ := peekIDs(t, s2, 100)
	wantIDs := append(want(0, 4), want(5, 9)...)
	if fmt.Sprint(ids) != fmt.Sprint(wantIDs) {
		t.Fatalf("recovered: got %v, want %v", ids, wantIDs)
	}
	if !bytes.Contains(logs.Bytes(), []byte("damaged record skipped")) || !bytes.Contains(logs.Bytes(), []byte("torn tail cut")) {
		t.Fatalf("recovery did not say what it dropped; logs:\n%s", logs)
	}
	if st, _ := os.Stat(segs[0]); st.Size() != int64(9*recSize) {
		t.Fatalf("segment size after cutting the tail: got %d, want %d", st.Size(), 9*recSize)
	}
	appendN(t, s2, 100, 1) // appends continue after the cut
	ids, recs := peekIDs(t, s2, 100)
	if ids[len(ids)-1] != "ev-00100" {
		t.Fatalf("append after recovery: got %v", ids)
	}
	if err := s2.Ack(recs); err != nil {
		t.Fatal(err)
	}
	if st := s2.Stats(); st.Events != 0 || st.Bytes != 0 {
		t.Fatalf("after draining a damaged spool: got %+v, want empty", st)
	}
}

func TestFullSpoolRefusesAndKeepsWhatItHas(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{MaxBytes: 1000})
	n := 0
	for ; ; n++ {
		err := s.Append("topic", ev(n), 0)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 1000 {
			t.Fatal("never full")
		}
	}
	if st := s.Stats(); st.Bytes > 1000 || st.Events != n {
		t.Fatalf("full spool: got %+v, want ≤1000 bytes and %d events", st, n)
	}
	ids, recs := peekIDs(t, s, 1000)
	if fmt.Sprint(ids) != fmt.Sprint(want(0, n)) {
		t.Fatalf("kept: got %v", ids)
	}
	s.Ack(recs[:1])
	if err := s.Append("topic", ev(999), 0); err != nil {
		t.Fatalf("append after draining one: %v", err)
	}
}

func TestConcurrentAppendsAreAllDurableAndShareFsyncs(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	const writers, each = 16, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := s.Append("topic", ev(w*1000+i), FlagUncertain*byte(i%2)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	s.Close()
	s2, _ := open(t, dir, Options{})
	ids, recs := peekIDs(t, s2, 10000)
	if len(ids) != writers*each {
		t.Fatalf("got %d records, want %d", len(ids), writers*each)
	}
	// Per writer, order is kept.
	last := map[int]int{}
	for _, r := range recs {
		var w, i int
		fmt.Sscanf(r.Event.ID, "ev-%05d", &i)
		w, i = i/1000, i%1000
		if prev, ok := last[w]; ok && i <= prev {
			t.Fatalf("writer %d: record %d after %d", w, i, prev)
		}
		last[w] = i
		if r.Uncertain != (i%2 == 1) {
			t.Fatalf("record %s: uncertain %v", r.Event.ID, r.Uncertain)
		}
	}
}

func TestRecordsLargerThanAReadChunk(t *testing.T) {
	s, _ := open(t, t.TempDir(), Options{})
	big := ev(1)
	big.Data = bytes.Repeat([]byte("x"), 3<<20)
	appendN(t, s, 0, 1)
	if err := s.Append("topic", big, 0); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 2, 1)
	ids, recs := peekIDs(t, s, 10)
	if fmt.Sprint(ids) != "[ev-00000 ev-00001 ev-00002]" || len(recs[1].Event.Data) != 3<<20 {
		t.Fatalf("got %v (big record %d bytes)", ids, len(recs[1].Event.Data))
	}
}

func TestOneSpoolDirectoryOneProcess(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	if _, err := Open(dir, Options{}, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "in use by another sidecar") {
		t.Fatalf("second Open of a held spool: got %v, want an in-use error", err)
	}
	s.Close()
	s2, err := Open(dir, Options{}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

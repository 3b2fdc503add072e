package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// oldestFirst is the number of the first event in the oldest segment left
// in dir: where a drain restarts without a usable cursor.
func oldestFirst(t *testing.T, dir string) int {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segExt)) // sorted: fixed-width hex names
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	_, payload, _, err := parseRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	_, ev, err := event.DecodeBinary(payload)
	if err != nil {
		t.Fatal(err)
	}
	var i int
	fmt.Sscanf(ev.ID, "ev-%05d", &i)
	return i
}

// drainedSpool writes events 0..29 over several segments and acknowledges
// them in two rounds (0..11, then 12..16), as a drain does. It returns the
// directory, closed, and the position after event 11.
func drainedSpool(t *testing.T) (string, position) {
	t.Helper()
	dir := t.TempDir()
	s, _ := open(t, dir, Options{SegmentBytes: 300})
	appendN(t, s, 0, 30)
	_, recs := peekIDs(t, s, 12)
	if err := s.Ack(recs); err != nil {
		t.Fatal(err)
	}
	after11 := recs[11].end
	_, recs = peekIDs(t, s, 5)
	if err := s.Ack(recs); err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir, after11
}

// damageNewestSlot flips a byte of the cursor slot with the newest
// generation, as a write torn by a crash would.
func damageNewestSlot(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, cursorFile)
	b, err := os.ReadFile(path)
	if err != nil || len(b) != cursorSize {
		t.Fatalf("cursor file: %d bytes, %v; want %d", len(b), err, cursorSize)
	}
	g0, _, _ := decodeCursor(b[:cursorRec])
	g1, _, _ := decodeCursor(b[cursorSlot : cursorSlot+cursorRec])
	at := 0
	if g1 > g0 {
		at = cursorSlot
	}
	b[at+20] ^= 0x40
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCursorRecovery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string, after11 position)
		// first is the event the drain restarts at, from the cursor; -1:
		// from the oldest segment. A cursor into a segment Ack deleted
		// restarts at the oldest segment left (all before it was drained).
		first int
	}{
		{name: "clean", damage: func(*testing.T, string, position) {}, first: 17},
		{
			name:   "newest slot torn: the one before it holds",
			damage: func(t *testing.T, dir string, _ position) { damageNewestSlot(t, dir) },
			first:  12, // re-drained 12..16 are filtered by event id (the drain is idempotent)
		},
		{
			name: "both slots torn: from the oldest segment",
			damage: func(t *testing.T, dir string, _ position) {
				path := filepath.Join(dir, cursorFile)
				b, _ := os.ReadFile(path)
				b[20] ^= 0x40
				b[cursorSlot+20] ^= 0x40
				if err := os.WriteFile(path, b, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			first: -1, // the first record of the oldest segment left, 17 at most
		},
		{
			name: "legacy text cursor is read and converted",
			damage: func(t *testing.T, dir string, p position) {
				legacy := fmt.Sprintf("%x %d\n", p.seq, p.off)
				if err := os.WriteFile(filepath.Join(dir, cursorFile), []byte(legacy), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			first: 12,
		},
		{
			name: "no cursor file: from the oldest segment",
			damage: func(t *testing.T, dir string, _ position) {
				if err := os.Remove(filepath.Join(dir, cursorFile)); err != nil {
					t.Fatal(err)
				}
			},
			first: -1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, after11 := drainedSpool(t)
			tc.damage(t, dir, after11)
			first := max(tc.first, oldestFirst(t, dir))
			s, _ := open(t, dir, Options{SegmentBytes: 300})
			ids, recs := peekIDs(t, s, 100)
			if fmt.Sprint(ids) != fmt.Sprint(want(first, 30)) {
				t.Fatalf("after reopen: got %v, want ev-%05d..29 in order", ids, first)
			}
			if b, err := os.ReadFile(filepath.Join(dir, cursorFile)); err != nil || len(b) != cursorSize {
				t.Fatalf("cursor file after Open: %d bytes, %v; want the %d-byte format", len(b), err, cursorSize)
			}
			if err := s.Ack(recs); err != nil {
				t.Fatal(err)
			}
			s.Close()
			s2, _ := open(t, dir, Options{SegmentBytes: 300})
			if st := s2.Stats(); st.Events != 0 {
				t.Fatalf("reopened after the drain: got %d events, want 0", st.Events)
			}
		})
	}
}

// TestAckNeedsNoNewFile: once Open has made the cursor file, a drain
// overwrites it in place — same file, same size, no temporary file — so it
// needs no disk block a full disk could refuse.
func TestAckNeedsNoNewFile(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, Options{SegmentBytes: 300})
	path := filepath.Join(dir, cursorFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatalf("Open made no cursor file: %v", err)
	}
	for round := range 10 {
		appendN(t, s, round*10, 10)
		_, recs := peekIDs(t, s, 7)
		if err := s.Ack(recs); err != nil {
			t.Fatal(err)
		}
		after, err := os.Stat(path)
		if err != nil || !os.SameFile(before, after) || after.Size() != cursorSize {
			t.Fatalf("round %d: cursor file replaced or resized (%v)", round, err)
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".tmp") {
				t.Fatalf("round %d: %s written", round, e.Name())
			}
		}
	}
}

// TestCrashBetweenSegmentDeleteAndCursorWrite: Ack deletes drained
// segments before it persists the cursor. A crash between the two leaves
// the old cursor pointing into a deleted segment; recovery must neither
// lose what follows nor hide new appends behind the stale offset.
func TestCrashBetweenSegmentDeleteAndCursorWrite(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drainTo int // events acknowledged by the Ack the crash interrupts
	}{
		{"everything drained, the last segment deleted", 30},
		{"older segments deleted, the cursor inside a later one", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := open(t, dir, Options{SegmentBytes: 300})
			appendN(t, s, 0, 30)
			_, recs := peekIDs(t, s, 5)
			if err := s.Ack(recs); err != nil {
				t.Fatal(err)
			}
			stale, err := os.ReadFile(filepath.Join(dir, cursorFile))
			if err != nil {
				t.Fatal(err)
			}
			_, recs = peekIDs(t, s, tc.drainTo-5)
			if err := s.Ack(recs); err != nil {
				t.Fatal(err)
			}
			s.Close()
			// The crash: the segments are gone, the cursor write never happened.
			if err := os.WriteFile(filepath.Join(dir, cursorFile), stale, 0o600); err != nil {
				t.Fatal(err)
			}
			// Undrained events restart where the segments left begin
			// (re-draining is idempotent); none is skipped.
			first := 30
			if segs, _ := filepath.Glob(filepath.Join(dir, "*"+segExt)); len(segs) > 0 {
				first = oldestFirst(t, dir)
			}
			s2, _ := open(t, dir, Options{SegmentBytes: 300})
			appendN(t, s2, 100, 3)
			ids, _ := peekIDs(t, s2, 100)
			wantIDs := append(want(first, 30), want(100, 103)...)
			if first > tc.drainTo || fmt.Sprint(ids) != fmt.Sprint(wantIDs) {
				t.Fatalf("after the crash: got %v, want %v", ids, wantIDs)
			}
		})
	}
}

package spool

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// recordStarts follows the length fields of an undamaged segment and
// returns where each record starts, plus the segment's length at the end.
func recordStarts(t *testing.T, b []byte) []int {
	t.Helper()
	var starts []int
	for off := 0; off < len(b); {
		if b[off] != magic {
			t.Fatalf("no record header at %d", off)
		}
		starts = append(starts, off)
		off += headerSize + int(binary.LittleEndian.Uint32(b[off+2:]))
	}
	return append(starts, len(b))
}

// writeSpool appends events 0..n-1 to a fresh spool in one segment, closes
// it and returns the directory, the segment's path and its bytes.
func writeSpool(t *testing.T, n int) (string, string, []byte) {
	t.Helper()
	dir := t.TempDir()
	s, _ := open(t, dir, Options{})
	appendN(t, s, 0, n)
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("got %d segments, want 1", len(segs))
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	return dir, segs[0], b
}

func without(ids []string, drop ...int) []string {
	var out []string
	for i, id := range ids {
		if !slices.Contains(drop, i) {
			out = append(out, id)
		}
	}
	return out
}

// TestCorruptRecordInTheMiddleLosesNothingElse damages one byte of record
// 250 of 500, met by recovery (reopen) or only by Peek (live), read in
// chunks larger and smaller than a record: a damaged length or magic byte
// is repaired (the bytes between the header and the next good record still
// match the header's CRC), any other damage loses that one record only.
// Recovery used to take a length running past the end for a torn tail and
// cut the 250 intact records after it.
func TestCorruptRecordInTheMiddleLosesNothingElse(t *testing.T) {
	const n, victim = 500, 250
	for _, tc := range []struct {
		name  string
		at    int  // byte of the victim's record
		add   byte // added to that byte
		lost  []int
		fixed bool // the log says repaired, not skipped
	}{
		{name: "length byte 0 +0x10", at: 2, add: 0x10, fixed: true},
		{name: "length byte 1 +0x10", at: 3, add: 0x10, fixed: true},
		{name: "length byte 2 +0x10 (runs past the end)", at: 4, add: 0x10, fixed: true},
		{name: "length byte 3 +0x10 (over maxPayload)", at: 5, add: 0x10, fixed: true},
		{name: "magic", at: 0, add: 0x10, fixed: true},
		{name: "flags", at: 1, add: 0x10, lost: []int{victim}},
		{name: "crc", at: 7, add: 0x10, lost: []int{victim}},
		{name: "payload", at: headerSize + 20, add: 0x10, lost: []int{victim}},
	} {
		for _, mode := range []struct {
			name   string
			reopen bool  // damage before Open (recovery meets it) or after (only Peek does)
			chunk  int64 // Peek's first read; smaller than a record makes it grow
		}{
			{"reopen", true, peekChunk},
			{"reopen/chunk-100", true, 100},
			{"live", false, peekChunk},
			{"live/chunk-64", false, 64},
			{"live/chunk-1000", false, 1000},
		} {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				dir, seg, b := writeSpool(t, n)
				starts := recordStarts(t, b)
				b[starts[victim]+tc.at] += tc.add
				var s *Spool
				var logs *bytes.Buffer
				if !mode.reopen {
					s, logs = open(t, dir, Options{})
				}
				if err := os.WriteFile(seg, b, 0o600); err != nil {
					t.Fatal(err)
				}
				if mode.reopen {
					s, logs = open(t, dir, Options{})
				}
				s.peekChunk = mode.chunk
				wantIDs := without(want(0, n), tc.lost...)
				var ids []string
				var recs []Record
				for len(ids) < n { // in drain-sized batches, so Peek resumes mid-segment
					batchIDs, batch := peekIDs(t, s, 64)
					if len(batch) == 0 {
						break
					}
					if err := s.Ack(batch); err != nil {
						t.Fatal(err)
					}
					ids, recs = append(ids, batchIDs...), append(recs, batch...)
				}
				if fmt.Sprint(ids) != fmt.Sprint(wantIDs) {
					t.Fatalf("got %d records, want %d (lost %v)", len(ids), len(wantIDs), tc.lost)
				}
				msg := "damaged record skipped"
				if tc.fixed {
					msg = "damaged record repaired"
				}
				where := fmt.Sprintf(`"offset":%d`, starts[victim])
				if bytes.Count(logs.Bytes(), []byte(msg)) != 1 || !bytes.Contains(logs.Bytes(), []byte(where)) {
					t.Fatalf("log: want %q at %s once; got:\n%s", msg, where, logs)
				}
				if !mode.reopen {
					return // the count was made before the damage
				}
				if st := s.Stats(); st.Events != 0 || st.Bytes != 0 {
					t.Fatalf("after draining: got %+v, want empty", st)
				}
				if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 0 {
					t.Fatalf("drained segment left: %v", segs)
				}
			})
		}
	}
}

// TestTornTailIsCutOnlyWhenNothingGoodFollows: a write a crash interrupted
// leaves a partial record at the end; it is cut, and the records before it
// are kept. Damage that is not at the end is never taken for a tail.
func TestTornTailIsCutOnlyWhenNothingGoodFollows(t *testing.T) {
	const n = 100
	for _, tc := range []struct {
		name    string
		damage  func(b []byte, starts []int) []byte
		lost    []int
		wantCut func(starts []int) int // segment size after recovery
	}{
		{
			name:    "half a payload",
			damage:  func(b []byte, s []int) []byte { return b[:s[n-1]+headerSize+5] },
			lost:    []int{n - 1},
			wantCut: func(s []int) int { return s[n-1] },
		},
		{
			name:    "half a header",
			damage:  func(b []byte, s []int) []byte { return b[:s[n-1]+6] },
			lost:    []int{n - 1},
			wantCut: func(s []int) int { return s[n-1] },
		},
		{
			name:    "one byte of a header",
			damage:  func(b []byte, s []int) []byte { return b[:s[n-1]+1] },
			lost:    []int{n - 1},
			wantCut: func(s []int) int { return s[n-1] },
		},
		{
			name: "a damaged record, then a torn tail",
			damage: func(b []byte, s []int) []byte {
				b[s[40]+headerSize+3] ^= 0xff
				return b[:s[n-1]+headerSize+5]
			},
			lost:    []int{40, n - 1},
			wantCut: func(s []int) int { return s[n-1] },
		},
		{
			name: "last record's length damaged: repaired, not cut",
			damage: func(b []byte, s []int) []byte {
				b[s[n-1]+4] += 0x10
				return b
			},
			wantCut: func(s []int) int { return s[n] },
		},
		{
			name: "last record's payload damaged: nothing good follows, cut",
			damage: func(b []byte, s []int) []byte {
				b[s[n-1]+headerSize+3] ^= 0xff
				return b
			},
			lost:    []int{n - 1},
			wantCut: func(s []int) int { return s[n-1] },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, seg, b := writeSpool(t, n)
			starts := recordStarts(t, b)
			if err := os.WriteFile(seg, tc.damage(b, starts), 0o600); err != nil {
				t.Fatal(err)
			}
			s, _ := open(t, dir, Options{})
			wantIDs := without(want(0, n), tc.lost...)
			if ids, _ := peekIDs(t, s, 2*n); fmt.Sprint(ids) != fmt.Sprint(wantIDs) {
				t.Fatalf("got %v, want %v", ids, wantIDs)
			}
			if st, _ := os.Stat(seg); st.Size() != int64(tc.wantCut(starts)) {
				t.Fatalf("segment size: got %d, want %d", st.Size(), tc.wantCut(starts))
			}
			appendN(t, s, 1000, 1) // appends continue behind what recovery kept
			ids, _ := peekIDs(t, s, 2*n)
			if ids[len(ids)-1] != "ev-01000" || len(ids) != len(wantIDs)+1 {
				t.Fatalf("after an append: got %d records ending %s", len(ids), ids[len(ids)-1])
			}
		})
	}
}

// TestRandomSingleByteDamageLosesAtMostThatRecord flips one random byte
// of a segment, many times over: recovery and Peek (in whole or small
// chunks) return every record but, at most, the one holding the byte — and
// that one too when the byte is its magic or length.
func TestRandomSingleByteDamageLosesAtMostThatRecord(t *testing.T) {
	const n, rounds = 60, 300
	_, _, pristine := writeSpool(t, n)
	starts := recordStarts(t, pristine)
	rng := rand.New(rand.NewPCG(1, 2)) // fixed seed: a failure can be replayed
	for round := range rounds {
		at := rng.IntN(len(pristine))
		flip := byte(1 + rng.IntN(255))
		victim := 0
		for victim+1 < len(starts) && starts[victim+1] <= at {
			victim++
		}
		field := at - starts[victim]
		t.Run(fmt.Sprintf("%d/byte-%d-of-record-%d^%#x", round, field, victim, flip), func(t *testing.T) {
			dir := t.TempDir()
			b := slices.Clone(pristine)
			b[at] ^= flip
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%016x%s", 0, segExt)), b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, _ := open(t, dir, Options{})
			s.peekChunk = []int64{peekChunk, 64, 200}[round%3]
			ids, recs := peekIDs(t, s, 2*n)
			all := want(0, n)
			repairable := field == 0 || (field >= 2 && field < 6)
			ok := fmt.Sprint(ids) == fmt.Sprint(all) ||
				(!repairable && fmt.Sprint(ids) == fmt.Sprint(without(all, victim)))
			if !ok {
				t.Fatalf("got %d records %v, want all %d or all but %d", len(ids), ids, n, victim)
			}
			if st := s.Stats(); st.Events != len(ids) {
				t.Fatalf("events: got %d, want %d", st.Events, len(ids))
			}
			if err := s.Ack(recs); err != nil {
				t.Fatal(err)
			}
			if st := s.Stats(); st.Events != 0 || st.Bytes != 0 {
				t.Fatalf("after draining: got %+v, want empty", st)
			}
		})
	}
}

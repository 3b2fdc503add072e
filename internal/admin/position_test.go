package admin

import (
	"errors"
	"testing"
)

func TestParsePosition(t *testing.T) {
	for _, tc := range []struct {
		in         string
		kind       PositionKind
		start, end string
		bad        bool
	}{
		{in: "1700000000000-0", kind: AtID, start: "1700000000000-0", end: "1700000000000-0"},
		{in: "1700000000000-7", kind: AtID, start: "1700000000000-7", end: "1700000000000-7"},
		{in: "1700000000000", kind: AtID, start: "1700000000000-0", end: "1700000000000-18446744073709551615"},
		{in: "0-0", kind: AtID, start: "0-0", end: "0-0"},
		{in: "2023-11-14T22:13:20Z", kind: AtTime, start: "1700000000000-0", end: "1700000000000-18446744073709551615"},
		{in: "2023-11-14T23:13:20+01:00", kind: AtTime, start: "1700000000000-0", end: "1700000000000-18446744073709551615"},
		// Within a millisecond: at or after starts at the next one; at or
		// before ends with the one it is in.
		{in: "2023-11-14T22:13:20.0005Z", kind: AtTime, start: "1700000000001-0", end: "1700000000000-18446744073709551615"},
		{in: "2023-11-14T22:13:20.123Z", kind: AtTime, start: "1700000000123-0", end: "1700000000123-18446744073709551615"},
		{in: "earliest", kind: AtEarliest, start: "-", end: "-"},
		{in: "latest", kind: AtLatest, start: "+", end: "+"},
		{in: "", bad: true},
		{in: "yesterday", bad: true},
		{in: "1700000000000-", bad: true},
		{in: "-5", bad: true},
		{in: "+5", bad: true},
		{in: "1700000000000-x", bad: true},
		{in: "18446744073709551616-0", bad: true}, // past uint64
		{in: "2023-11-14", bad: true},             // a date is not a time
		{in: "1969-12-31T23:59:59Z", bad: true},   // before any stream id
		{in: "$", bad: true},
		{in: "Earliest", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePosition(tc.in)
			if tc.bad {
				if !errors.Is(err, ErrBadPosition) {
					t.Fatalf("got %+v, %v; want ErrBadPosition", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Kind != tc.kind || p.Start() != tc.start || p.End() != tc.end {
				t.Fatalf("got kind %d start %s end %s, want kind %d start %s end %s", p.Kind, p.Start(), p.End(), tc.kind, tc.start, tc.end)
			}
		})
	}
}

func TestBeforeAndAfter(t *testing.T) {
	for _, tc := range []struct{ id, before, after string }{
		{"1700000000000-5", "1700000000000-4", "1700000000000-6"},
		{"1700000000000-0", "1699999999999-18446744073709551615", "1700000000000-1"},
		{"0-0", "0", "0-1"},
		{"5-18446744073709551615", "5-18446744073709551614", "6-0"},
	} {
		if got := before(tc.id); got != tc.before {
			t.Errorf("before(%s): got %s, want %s", tc.id, got, tc.before)
		}
		if got := after(tc.id); got != tc.after {
			t.Errorf("after(%s): got %s, want %s", tc.id, got, tc.after)
		}
	}
}

package admin

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// PositionKind says how a client named a place in a stream.
type PositionKind int

// The kinds of position.
const (
	AtID       PositionKind = iota + 1 // a stream id: "1700000000000-0" (or "1700000000000")
	AtTime                             // an RFC 3339 time
	AtEarliest                         // "earliest": before the first entry
	AtLatest                           // "latest": after the last entry
)

// Position is a place in a stream, as given in from= or a seek's "to".
type Position struct {
	Kind PositionKind
	// MS and Seq are the stream id (AtID), or for AtTime the time in
	// milliseconds; HasSeq says whether the id named its sequence part.
	MS, Seq uint64
	HasSeq  bool
	// Time is the time given (AtTime).
	Time time.Time
}

// ErrBadPosition is a position that is none of the accepted forms.
var ErrBadPosition = errors.New(`want a stream id ("1700000000000-0"), an RFC 3339 time ("2026-01-02T15:04:05Z"), "earliest" or "latest"`)

// ParsePosition parses a position: a stream id, an RFC 3339 time,
// "earliest" or "latest".
func ParsePosition(s string) (Position, error) {
	switch s {
	case "earliest":
		return Position{Kind: AtEarliest}, nil
	case "latest":
		return Position{Kind: AtLatest}, nil
	case "":
		return Position{}, fmt.Errorf("empty position: %w", ErrBadPosition)
	}
	if ms, seq, hasSeq, ok := parseID(s); ok {
		return Position{Kind: AtID, MS: ms, Seq: seq, HasSeq: hasSeq}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return Position{}, fmt.Errorf("position %q: %w", s, ErrBadPosition)
	}
	if t.Before(time.UnixMilli(0)) {
		return Position{}, fmt.Errorf("position %q is before 1970: %w", s, ErrBadPosition)
	}
	// At or after t: an entry's id has millisecond precision, so a time
	// within a millisecond starts at the next one.
	ms := t.UnixMilli()
	if t.After(time.UnixMilli(ms)) {
		ms++
	}
	return Position{Kind: AtTime, MS: uint64(ms), Time: t}, nil
}

// parseID parses "ms-seq" or "ms", each part a uint64.
func parseID(s string) (ms, seq uint64, hasSeq, ok bool) {
	a, b, hasSeq := strings.Cut(s, "-")
	ms, err := strconv.ParseUint(a, 10, 64)
	if err != nil || a == "" || a[0] == '+' {
		return 0, 0, false, false
	}
	if hasSeq {
		if seq, err = strconv.ParseUint(b, 10, 64); err != nil || b == "" || b[0] == '+' {
			return 0, 0, false, false
		}
	}
	return ms, seq, hasSeq, true
}

// Start is the position as the inclusive lower bound of XRANGE: the first
// entry at or after it.
func (p Position) Start() string {
	switch p.Kind {
	case AtEarliest:
		return "-"
	case AtLatest:
		return "+"
	}
	return formatID(p.MS, p.Seq)
}

// End is the position as the inclusive upper bound of XREVRANGE: the last
// entry at or before it. A bare millisecond id or a time covers its whole
// millisecond.
func (p Position) End() string {
	switch p.Kind {
	case AtEarliest:
		return "-"
	case AtLatest:
		return "+"
	case AtTime:
		// The first millisecond at or after the time was taken for Start;
		// an upper bound is the last whole millisecond at or before it.
		ms := p.Time.UnixMilli()
		return formatID(uint64(ms), math.MaxUint64)
	}
	if !p.HasSeq {
		return formatID(p.MS, math.MaxUint64)
	}
	return formatID(p.MS, p.Seq)
}

func formatID(ms, seq uint64) string {
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10)
}

// before returns the id just before id ("0" for the very first): a
// group's last-delivered-id from which id is the next entry read.
func before(id string) string {
	ms, seq, _, ok := parseID(id)
	switch {
	case !ok:
		return id
	case seq > 0:
		return formatID(ms, seq-1)
	case ms > 0:
		return formatID(ms-1, math.MaxUint64)
	}
	return "0"
}

// after returns the id just after id: the inclusive start of what follows.
func after(id string) string {
	ms, seq, _, ok := parseID(id)
	switch {
	case !ok:
		return id
	case seq < math.MaxUint64:
		return formatID(ms, seq+1)
	case ms < math.MaxUint64:
		return formatID(ms+1, 0)
	}
	return "+"
}

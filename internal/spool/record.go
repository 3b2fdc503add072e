package spool

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// On disk a record is a 10-byte header and a payload:
//
//	magic (1) | flags (1) | payload length (4, LE) | CRC-32C of flags+payload (4, LE) | payload
//
// The checksum lets recovery tell a torn or corrupted record from a good one,
// and resynchronise on the next good record after damage.
const (
	magic      = 0xE7
	headerSize = 10
	// maxPayload bounds a record's length field, so a corrupt length cannot
	// make recovery read gigabytes.
	maxPayload = 64 << 20
)

// Flag bits of a record.
const (
	// FlagUncertain marks an event spooled after a publish to Redis timed
	// out: Redis may still have applied that XADD.
	FlagUncertain byte = 1 << 0
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendRecord(b []byte, flags byte, payload []byte) []byte {
	var h [headerSize]byte
	h[0] = magic
	h[1] = flags
	binary.LittleEndian.PutUint32(h[2:], uint32(len(payload)))
	c := crc32.Update(0, castagnoli, []byte{flags})
	c = crc32.Update(c, castagnoli, payload)
	binary.LittleEndian.PutUint32(h[6:], c)
	b = append(b, h[:]...)
	return append(b, payload...)
}

var errBadRecord = errors.New("bad record")

// parseRecord reads one record at the start of b. It returns the flags,
// payload and total size, or errBadRecord (damage) or io.ErrUnexpectedEOF
// (b ends inside a record that looks good so far).
func parseRecord(b []byte) (flags byte, payload []byte, size int, err error) {
	if len(b) < headerSize {
		if len(b) > 0 && b[0] != magic {
			return 0, nil, 0, errBadRecord
		}
		return 0, nil, 0, io.ErrUnexpectedEOF
	}
	if b[0] != magic {
		return 0, nil, 0, errBadRecord
	}
	n := binary.LittleEndian.Uint32(b[2:])
	if n > maxPayload {
		return 0, nil, 0, errBadRecord
	}
	if len(b) < headerSize+int(n) {
		return 0, nil, 0, io.ErrUnexpectedEOF
	}
	flags, payload = b[1], b[headerSize:headerSize+int(n)]
	c := crc32.Update(0, castagnoli, []byte{flags})
	c = crc32.Update(c, castagnoli, payload)
	if c != binary.LittleEndian.Uint32(b[6:]) {
		return 0, nil, 0, errBadRecord
	}
	return flags, payload, headerSize + int(n), nil
}

// visitor receives what scan finds. record gets every good (or repaired)
// record and returns false to stop after it; damaged gets every damaged
// region once: a record repaired in place (then record gets it too) or bytes
// skipped up to the next good record.
type visitor struct {
	record  func(flags byte, payload []byte, start, end int) bool
	damaged func(start, end int, repaired bool)
}

// scan walks the records of b from off. final says b runs to the end of the
// segment; otherwise b is a chunk of it, and a record or damaged region that
// the chunk cannot settle stops the scan, so the caller reads more.
//
// A record that does not parse is damage, never a torn tail, while a good
// record follows it: a corrupt length must not cost the records after it.
// The bytes from its header to that next good record are then checked
// against the header's CRC (which covers flags and payload, not the
// length): when they match, only the length (or magic) was hit and the
// record is recovered whole. Only damage with no good record after it, at
// the end of the segment, is a torn tail.
//
// scan returns the offset up to which b is settled, and torn when a torn
// tail starts there.
func scan(b []byte, off int, final bool, v visitor) (next int, torn bool) {
	for off < len(b) {
		flags, payload, size, err := parseRecord(b[off:])
		if err == nil {
			if !v.record(flags, payload, off, off+size) {
				return off + size, false
			}
			off += size
			continue
		}
		if errors.Is(err, io.ErrUnexpectedEOF) && !final {
			return off, false // the chunk ends inside a record: not damage yet
		}
		q, settled := nextRecord(b, off+1, final)
		if !settled {
			return off, false
		}
		end := q
		if q < 0 {
			end = len(b)
		}
		if flags, payload, ok := repair(b[off:end]); ok {
			if v.damaged != nil {
				v.damaged(off, end, true)
			}
			if !v.record(flags, payload, off, end) {
				return end, false
			}
			off = end
			continue
		}
		if q < 0 {
			return off, true
		}
		if v.damaged != nil {
			v.damaged(off, q, false)
		}
		off = q
	}
	return off, false
}

// nextRecord finds the first offset at or after from where a whole good
// record starts: -1 when none does (final only). In a chunk (not final) it
// is unsettled when the chunk ends before one is found, or a candidate runs
// past the chunk's end — the whole segment might show an earlier one, and
// recovery and Peek must take the same decision.
func nextRecord(b []byte, from int, final bool) (q int, settled bool) {
	for i := from; i < len(b); i++ {
		if b[i] != magic {
			continue
		}
		_, _, _, err := parseRecord(b[i:])
		switch {
		case err == nil:
			return i, true
		case errors.Is(err, io.ErrUnexpectedEOF) && !final:
			return 0, false
		}
	}
	if !final {
		return 0, false
	}
	return -1, true
}

// repair reads b — the bytes from a damaged record's header to the next
// good record — as that record with its length (and magic) taken from
// where it ends. It succeeds when flags and payload match the header's
// CRC-32C, so only a header field outside the checksum was hit; a chance
// match is one in 2³².
func repair(b []byte) (flags byte, payload []byte, ok bool) {
	if len(b) < headerSize || len(b)-headerSize > maxPayload {
		return 0, nil, false
	}
	flags, payload = b[1], b[headerSize:]
	c := crc32.Update(0, castagnoli, []byte{flags})
	c = crc32.Update(c, castagnoli, payload)
	return flags, payload, c == binary.LittleEndian.Uint32(b[6:])
}

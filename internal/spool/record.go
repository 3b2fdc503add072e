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

// scan walks the records of a segment's bytes from off. For each good
// record it calls fn with the record's start and end offsets. Damaged
// regions are skipped up to the next good record and reported through
// skipped(start, end). It returns the offset where good data ends: len(b),
// or the start of a torn tail (an incomplete record or damage with no good
// record after it).
func scan(b []byte, off int, fn func(flags byte, payload []byte, start, end int) bool, skipped func(start, end int)) int {
	for off < len(b) {
		flags, payload, size, err := parseRecord(b[off:])
		switch {
		case err == nil:
			if !fn(flags, payload, off, off+size) {
				return off + size
			}
			off += size
			continue
		case errors.Is(err, io.ErrUnexpectedEOF):
			return off // torn tail
		}
		next := resync(b, off+1)
		if next < 0 {
			return off // damage runs to the end: treat as a torn tail
		}
		if skipped != nil {
			skipped(off, next)
		}
		off = next
	}
	return off
}

// resync finds the next offset at or after from where a whole good record starts.
func resync(b []byte, from int) int {
	for i := from; i < len(b); i++ {
		if b[i] != magic {
			continue
		}
		if _, _, _, err := parseRecord(b[i:]); err == nil {
			return i
		}
	}
	return -1
}

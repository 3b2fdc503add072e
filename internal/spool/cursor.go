package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
)

// The cursor file holds the drain position. Ack must be able to persist
// it on a full disk — that is when draining matters most — so the file is
// made once, at its full size, and then only overwritten in place (pwrite +
// fsync), which needs no new disk block. It has two slots, one sector
// each, written alternately: a write torn by a crash damages only the slot
// being written, and recovery takes the newer slot whose checksum holds.
// With neither slot good, recovery drains from the oldest segment: what
// was drained already may then reach the stream twice (same event id, so
// a receiver deduplicating by webhook-id sees it once), never lost.
//
//	slot: "SPCURSR1" (8) | generation (8, LE) | segment (8, LE) | offset (8, LE) | CRC-32C of the 32 bytes before (4, LE)
//
// Before this format the file was the text "<segment hex> <offset>\n",
// replaced by rename; Open still reads it and converts it.
const (
	cursorFile  = "cursor"
	cursorMagic = "SPCURSR1"
	cursorSlot  = 512
	cursorSize  = 2 * cursorSlot
	cursorRec   = 36
)

func encodeCursor(gen uint64, p position) []byte {
	b := make([]byte, cursorRec)
	copy(b, cursorMagic)
	binary.LittleEndian.PutUint64(b[8:], gen)
	binary.LittleEndian.PutUint64(b[16:], p.seq)
	binary.LittleEndian.PutUint64(b[24:], uint64(p.off))
	binary.LittleEndian.PutUint32(b[32:], crc32.Checksum(b[:32], castagnoli))
	return b
}

func decodeCursor(b []byte) (gen uint64, p position, ok bool) {
	if string(b[:8]) != cursorMagic || crc32.Checksum(b[:32], castagnoli) != binary.LittleEndian.Uint32(b[32:]) {
		return 0, position{}, false
	}
	off := binary.LittleEndian.Uint64(b[24:])
	if off > math.MaxInt64 {
		return 0, position{}, false
	}
	return binary.LittleEndian.Uint64(b[8:]), position{seq: binary.LittleEndian.Uint64(b[16:]), off: int64(off)}, true
}

// slotOffset is where generation gen is written: never over the slot
// holding gen-1, the newest good one.
func slotOffset(gen uint64) int64 { return int64(gen%2) * cursorSlot }

// loadCursor sets s.cursor from the cursor file and reports whether the
// file is in the current format (else createCursor must replace it). It
// opens the file for the in-place writes of Ack.
func (s *Spool) loadCursor() (current bool, err error) {
	path := filepath.Join(s.dir, cursorFile)
	_ = os.Remove(path + ".tmp") // a creation a crash interrupted
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("spool cursor: %w", err)
	}
	if len(b) == cursorSize && (string(b[:8]) == cursorMagic || string(b[cursorSlot:cursorSlot+8]) == cursorMagic) {
		found := false
		for _, off := range []int{0, cursorSlot} {
			if gen, p, ok := decodeCursor(b[off : off+cursorRec]); ok && (!found || gen > s.cursorGen) {
				s.cursor, s.cursorGen, found = p, gen, true
			}
		}
		if !found {
			s.log.Warn().Msg("spool: cursor torn by a crash; draining from the oldest segment (duplicates are filtered by event id)")
		}
		if s.cursorF, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			return false, fmt.Errorf("spool cursor: %w", err)
		}
		return true, nil
	}
	if _, err := fmt.Sscanf(string(b), "%x %d", &s.cursor.seq, &s.cursor.off); err != nil || s.cursor.off < 0 {
		s.log.Warn().Err(err).Msg("spool: unreadable cursor; draining from the oldest segment (duplicates are filtered by event id)")
		s.cursor = position{}
	}
	return false, nil
}

// createCursor writes a full-size cursor file holding p (write, fsync,
// rename, fsync the directory) and opens it for in-place writes. Called
// from Open, or from Ack with wmu held once a drain has freed space.
func (s *Spool) createCursor(p position) error {
	path := filepath.Join(s.dir, cursorFile)
	gen := s.cursorGen + 1
	b := make([]byte, cursorSize)
	copy(b[slotOffset(gen):], encodeCursor(gen, p))
	f, err := os.OpenFile(path+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(path+".tmp", path)
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		_ = os.Remove(path + ".tmp") // give back what the disk lent
		return err
	}
	if s.cursorF, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		return err
	}
	s.cursorGen = gen
	return nil
}

// writeCursor persists the drain position by overwriting the older slot
// of the cursor file in place. Called with wmu held.
func (s *Spool) writeCursor(p position) error {
	if s.cursorF == nil {
		return s.createCursor(p)
	}
	gen := s.cursorGen + 1
	if _, err := s.cursorF.WriteAt(encodeCursor(gen, p), slotOffset(gen)); err != nil {
		return err
	}
	if err := s.cursorF.Sync(); err != nil {
		return err
	}
	s.cursorGen = gen
	return nil
}

// Package spool is sidecar's durable local buffer: an append-only log of
// events on disk, written with group commit (concurrent appends share one
// fsync), checksummed, bounded in size, and drained oldest first.
package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// ErrFull is returned by Append when the spool holds MaxBytes already.
var ErrFull = errors.New("spool full")

// Options configure a Spool.
type Options struct {
	MaxBytes     int64 // undrained bytes at most; default 1 GiB
	SegmentBytes int64 // roll to a new segment file past this size; default 8 MiB
	// NoGroupCommit makes every Append fsync on its own; for benchmarks only.
	NoGroupCommit bool
}

// Spool is the on-disk log. Appends may come from many goroutines; one
// drainer at a time calls Peek and Ack.
type Spool struct {
	dir  string
	opts Options
	log  zerolog.Logger

	lock *os.File // holds an exclusive flock on the directory's LOCK file

	// wmu serialises writers (the group-commit leader), segment changes and
	// cursor writes.
	wmu    sync.Mutex
	active *os.File
	// rollNext: a failed batch could not be cut off the active segment, so
	// its end on disk is unknown; the next batch starts a new segment.
	rollNext bool
	// cursorF is the pre-allocated cursor file, overwritten in place; nil
	// until it could be created (a disk already full at Open).
	cursorF   *os.File
	cursorGen uint64 // generation of the newest cursor slot on disk

	peekChunk int64 // a var so tests can make Peek read in small chunks

	mu       sync.Mutex // guards everything below
	segs     []segment  // oldest first; the last is the active one
	cursor   position   // first undrained record
	events   int        // undrained records
	bytes    int64      // undrained bytes
	queue    []pending  // appends waiting for the next commit
	flushing bool
	batch    *commit // the commit the queued appends will share
	// reported holds the damaged regions already logged, so each is logged
	// once, whether recovery or a later Peek meets it first.
	reported map[position]bool
}

type segment struct {
	seq  uint64
	size int64 // durable bytes
}

type position struct {
	seq uint64
	off int64
}

type pending struct {
	rec    []byte
	commit *commit
}

// commit is one group of appends made durable by one fsync.
type commit struct {
	done chan struct{}
	err  error
}

// Record is one spooled event, as Peek returns it.
type Record struct {
	Topic     string
	Event     *event.Event
	Uncertain bool
	end       position
}

// Stats describe what the spool holds.
type Stats struct {
	Events   int   `json:"events"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
	Segments int   `json:"segments"`
}

const segExt = ".seg"

// lockDir takes an exclusive flock on dir's LOCK file. Two processes
// appending to one spool would interleave records and drain each other's
// events: a directory another sidecar holds is refused.
func lockDir(dir string) (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool dir %s is in use by another sidecar process (give each sidecar its own SIDECAR_SPOOL_DIR): %w", dir, err)
	}
	return lock, nil
}

// Open opens (creating if needed) the spool in dir and recovers it: a
// damaged record is repaired when only its length or magic byte was hit,
// else skipped, and the records after it are kept; a torn tail (damage with
// no good record after it) is cut; each is logged once; the undrained
// records are counted.
func Open(dir string, opts Options, log zerolog.Logger) (*Spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s, err := openNoLock(dir, opts, log)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lock = lock
	return s, nil
}

// openNoLock opens and recovers the spool in dir without taking the
// directory's lock, for a caller that holds it already (the Set, moving an
// older spool out of its own directory). Release it with closeFiles.
func openNoLock(dir string, opts Options, log zerolog.Logger) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 8 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	s := &Spool{dir: dir, opts: opts, log: log, batch: &commit{done: make(chan struct{})},
		peekChunk: peekChunk, reported: map[position]bool{}}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func (s *Spool) segPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%016x%s", seq, segExt))
}

func (s *Spool) recover() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool dir: %w", err)
	}
	var seqs []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), segExt)
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	current, err := s.loadCursor()
	if err != nil {
		return err
	}
	if s.cursor.off > 0 && !slices.Contains(seqs, s.cursor.seq) {
		// Ack deletes a drained segment before it persists the cursor past
		// it: the segment is done, and a new one must not take its number
		// under a cursor that points into it.
		s.cursor = position{seq: s.cursor.seq + 1}
	}
	for _, seq := range seqs {
		if seq < s.cursor.seq {
			// Fully drained before a crash stopped its deletion.
			_ = os.Remove(s.segPath(seq))
			continue
		}
		b, err := os.ReadFile(s.segPath(seq))
		if err != nil {
			return fmt.Errorf("spool: read segment: %w", err)
		}
		start := 0
		if seq == s.cursor.seq {
			start = int(min(s.cursor.off, int64(len(b))))
			s.cursor.off = int64(start)
		}
		events := 0
		good, torn := scan(b, start, true, visitor{
			record: func(byte, []byte, int, int) bool {
				events++
				return true
			},
			damaged: func(st, end int, repaired bool) { s.reportDamage(seq, int64(st), int64(end), repaired, false) },
		})
		if torn {
			s.log.Warn().Str("segment", filepath.Base(s.segPath(seq))).Int("offset", good).Int("bytes", len(b)-good).
				Msg("spool: torn tail cut (a write the crash interrupted; it was never acknowledged)")
			if err := os.Truncate(s.segPath(seq), int64(good)); err != nil {
				return fmt.Errorf("spool: cut torn tail: %w", err)
			}
		}
		s.events += events
		s.bytes += int64(good - start)
		s.segs = append(s.segs, segment{seq: seq, size: int64(good)})
	}
	if len(s.segs) > 0 && s.cursor.seq < s.segs[0].seq {
		s.cursor = position{seq: s.segs[0].seq}
	}
	if !current {
		// Make the cursor file now, while there is room: draining later,
		// on a full disk, then only overwrites it.
		if err := s.createCursor(s.cursor); err != nil {
			s.log.Warn().Err(err).Msg("spool: could not create the cursor file; retried after the next drain frees space")
		}
	}
	if s.events > 0 {
		s.log.Info().Int("events", s.events).Int64("bytes", s.bytes).Msg("spool: recovered undrained events")
	}
	return nil
}

// reportDamage logs a damaged region of segment seq, once. Damage first
// met while running (by Peek, not by recovery, which counts only good
// records) was counted as an event when it was appended: an unrepaired
// region is uncounted then (as one record — the usual single damaged one),
// so the spool can become empty again and its topic return to direct
// publishing.
func (s *Spool) reportDamage(seq uint64, start, end int64, repaired, running bool) {
	s.mu.Lock()
	seen := s.reported[position{seq, start}]
	s.reported[position{seq, start}] = true
	if !seen && running && !repaired && s.events > 0 {
		s.events--
	}
	s.mu.Unlock()
	if seen {
		return
	}
	l := s.log.Error().Str("segment", filepath.Base(s.segPath(seq))).Int64("offset", start).Int64("bytes", end-start)
	if repaired {
		l.Msg("spool: damaged record repaired (a corrupt length or magic byte; its flags and payload match its checksum)")
		return
	}
	l.Msg("spool: damaged record skipped; the records after it are kept")
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Stats returns what the spool holds now.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{Events: s.events, Bytes: s.bytes, MaxBytes: s.opts.MaxBytes, Segments: len(s.segs)}
}

// Empty reports whether every appended record has been drained.
func (s *Spool) Empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events == 0 && len(s.queue) == 0 && !s.flushing
}

// Append writes (topic, ev) and returns once it is on disk (fsync'd).
// Concurrent appends are committed together. ErrFull when over MaxBytes.
func (s *Spool) Append(topic string, ev *event.Event, flags byte) error {
	_, err := s.AppendBatch(topic, []*event.Event{ev}, []byte{flags})
	return err
}

// flushLoop is run by the append that found no commit in progress: it
// writes and fsyncs queued records, batch after batch, until none wait.
func (s *Spool) flushLoop() {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.flushing = false
			s.mu.Unlock()
			return
		}
		q := s.queue
		if s.opts.NoGroupCommit {
			q = s.queue[:1]
		}
		s.queue = s.queue[len(q):]
		if len(s.queue) == 0 {
			s.queue = nil
		}
		if !s.opts.NoGroupCommit {
			s.batch = &commit{done: make(chan struct{})}
		}
		s.mu.Unlock()

		err := s.write(q)
		commits := map[*commit]bool{}
		for _, p := range q {
			commits[p.commit] = true
		}
		if err != nil {
			s.mu.Lock()
			for _, p := range q {
				s.bytes -= int64(len(p.rec))
				s.events--
			}
			s.mu.Unlock()
			s.log.Error().Err(err).Int("events", len(q)).Msg("spool write failed; publishers are told")
		}
		for c := range commits {
			c.err = err
			close(c.done)
		}
	}
}

// write appends records to the active segment and fsyncs it.
func (s *Spool) write(q []pending) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.ensureActive(); err != nil {
		return err
	}
	var buf []byte
	for _, p := range q {
		buf = append(buf, p.rec...)
	}
	s.mu.Lock()
	last := &s.segs[len(s.segs)-1]
	start := last.size
	s.mu.Unlock()
	// undo leaves no half batch behind (a full disk takes part of one):
	// cut back to the last durable size, or, when even that fails, write
	// the next batch to a new segment rather than after the debris.
	undo := func() {
		if err := s.active.Truncate(start); err != nil {
			s.active.Close()
			s.active, s.rollNext = nil, true
		}
	}
	if _, err := s.active.Write(buf); err != nil {
		undo()
		return fmt.Errorf("spool write: %w", err)
	}
	if err := s.active.Sync(); err != nil {
		undo()
		return fmt.Errorf("spool fsync: %w", err)
	}
	s.mu.Lock()
	s.segs[len(s.segs)-1].size += int64(len(buf))
	s.mu.Unlock()
	return nil
}

// ensureActive opens the active segment, rolling to a new one when it is
// past SegmentBytes. Called with wmu held.
func (s *Spool) ensureActive() error {
	s.mu.Lock()
	var seq uint64
	roll := len(s.segs) == 0 || s.segs[len(s.segs)-1].size >= s.opts.SegmentBytes || s.rollNext
	switch {
	case len(s.segs) == 0:
		seq = s.cursor.seq
		if s.cursor.off > 0 {
			// Never write a segment's start under a cursor that is past it.
			seq++
			s.cursor = position{seq: seq}
		}
	case roll:
		seq = s.segs[len(s.segs)-1].seq + 1
	default:
		seq = s.segs[len(s.segs)-1].seq
	}
	s.mu.Unlock()
	if s.active != nil && !roll {
		return nil
	}
	if s.active != nil {
		s.active.Close()
		s.active = nil
	}
	f, err := os.OpenFile(s.segPath(seq), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return fmt.Errorf("spool dir sync: %w", err)
	}
	s.active, s.rollNext = f, false
	s.mu.Lock()
	if len(s.segs) == 0 || s.segs[len(s.segs)-1].seq != seq {
		s.segs = append(s.segs, segment{seq: seq})
	}
	s.mu.Unlock()
	return nil
}

// peekChunk is how much of a segment one Peek reads at first; it grows when
// a single record is larger.
const peekChunk = 1 << 20

// Peek returns up to limit undrained records, oldest first, without removing
// them. Damaged records are skipped.
func (s *Spool) Peek(limit int) ([]Record, error) {
	s.mu.Lock()
	cur := s.cursor
	segs := append([]segment(nil), s.segs...)
	s.mu.Unlock()
	var out []Record
	for _, sg := range segs {
		if sg.seq < cur.seq {
			continue
		}
		start := int64(0)
		if sg.seq == cur.seq {
			start = cur.off
		}
		for start < sg.size && len(out) < limit {
			recs, next, err := s.peekSegment(sg, start, limit-len(out))
			if err != nil {
				return out, err
			}
			out = append(out, recs...)
			start = next
		}
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

// peekSegment decodes up to limit records of segment sg from offset start,
// reading a bounded chunk. It returns them and the offset up to which the
// segment is settled (records returned, damage stepped over).
func (s *Spool) peekSegment(sg segment, start int64, limit int) ([]Record, int64, error) {
	for chunk := s.peekChunk; ; chunk *= 2 {
		end := min(start+chunk, sg.size)
		b, err := readRange(s.segPath(sg.seq), start, end)
		if err != nil {
			return nil, start, err
		}
		var out []Record
		var derr error
		next, torn := scan(b, 0, end == sg.size, visitor{
			record: func(flags byte, payload []byte, _, e int) bool {
				topic, ev, err := event.DecodeBinary(payload)
				if err != nil {
					derr = fmt.Errorf("spool: decode record: %w", err)
					return false
				}
				out = append(out, Record{Topic: topic, Event: ev, Uncertain: flags&FlagUncertain != 0,
					end: position{seq: sg.seq, off: start + int64(e)}})
				return len(out) < limit
			},
			damaged: func(st, e int, repaired bool) {
				s.reportDamage(sg.seq, start+int64(st), start+int64(e), repaired, true)
			},
		})
		switch {
		case derr != nil:
			return out, start, derr
		case torn:
			// Damage with nothing good after it, in bytes recovery did not
			// see (it cuts torn tails): step over it.
			s.reportDamage(sg.seq, start+int64(next), end, false, true)
			return out, end, nil
		case next > 0:
			return out, start + int64(next), nil
		}
		// The chunk ends inside one record, or inside damage it cannot
		// settle (is a good record next?): read more. The last chunk, which
		// ends with the segment, always settles.
	}
}

func readRange(path string, from, to int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, to-from)
	if _, err := f.ReadAt(b, from); err != nil {
		return nil, err
	}
	return b, nil
}

// Ack marks every record up to and including last as drained, persists the
// position, and deletes segments that hold nothing undrained any more.
func (s *Spool) Ack(drained []Record) error {
	if len(drained) == 0 {
		return nil
	}
	last := drained[len(drained)-1].end
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	var freed int64
	var remove []uint64
	for _, sg := range s.segs {
		if sg.seq > last.seq {
			break
		}
		from := int64(0)
		if sg.seq == s.cursor.seq {
			from = s.cursor.off
		}
		to := sg.size
		if sg.seq == last.seq {
			to = last.off
		}
		freed += max(to-from, 0)
		if sg.seq < last.seq {
			remove = append(remove, sg.seq)
		}
	}
	s.cursor = last
	s.events -= len(drained)
	s.bytes -= freed
	// Everything drained and the active segment big enough to be worth it:
	// start afresh so the disk is given back.
	if s.events == 0 && len(s.queue) == 0 && !s.flushing && len(s.segs) > 0 {
		tail := s.segs[len(s.segs)-1]
		if last.seq == tail.seq && last.off == tail.size {
			remove = append(remove, tail.seq)
			s.cursor = position{seq: tail.seq + 1}
		}
	}
	kept := s.segs[:0]
	for _, sg := range s.segs {
		if !contains(remove, sg.seq) {
			kept = append(kept, sg)
		}
	}
	s.segs = kept
	cur := s.cursor
	closeActive := len(s.segs) == 0
	s.mu.Unlock()

	if closeActive && s.active != nil {
		s.active.Close()
		s.active = nil
	}
	// Delete drained segments before persisting the cursor: deleting needs
	// no disk space and gives it back, so a drain on a full disk frees it.
	// A crash in between leaves a cursor that points into or before a
	// deleted segment, which recovery moves on to the first one left.
	for _, seq := range remove {
		if err := os.Remove(s.segPath(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn().Err(err).Msg("spool: could not delete a drained segment")
		}
		s.mu.Lock()
		for p := range s.reported {
			if p.seq == seq {
				delete(s.reported, p)
			}
		}
		s.mu.Unlock()
	}
	if err := s.writeCursor(cur); err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	return nil
}

func contains(xs []uint64, x uint64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// Close releases the spool's files and the directory lock.
func (s *Spool) Close() error {
	err := s.closeFiles()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
	return err
}

// closeFiles releases the active segment and the cursor file.
func (s *Spool) closeFiles() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var err error
	if s.active != nil {
		err = s.active.Close()
		s.active = nil
	}
	if s.cursorF != nil {
		s.cursorF.Close()
		s.cursorF = nil
	}
	return err
}

// Package spool is sidecar's durable local buffer: an append-only log of
// events on disk, written with group commit (concurrent appends share one
// fsync), checksummed, bounded in size, and drained oldest first.
package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

	// wmu serialises writers (the group-commit leader) and segment changes.
	wmu    sync.Mutex
	active *os.File

	mu       sync.Mutex // guards everything below
	segs     []segment  // oldest first; the last is the active one
	cursor   position   // first undrained record
	events   int        // undrained records
	bytes    int64      // undrained bytes
	queue    []pending  // appends waiting for the next commit
	flushing bool
	batch    *commit // the commit the queued appends will share
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

const (
	segExt     = ".seg"
	cursorFile = "cursor"
)

// Open opens (creating if needed) the spool in dir and recovers it: torn
// tails are cut, damaged records are skipped and reported, and the
// undrained records are counted.
func Open(dir string, opts Options, log zerolog.Logger) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 8 << 20
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	// Two processes appending to one spool would interleave records and
	// drain each other's events: refuse a directory another sidecar holds.
	lock, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool dir %s is in use by another sidecar process (give each sidecar its own SIDECAR_SPOOL_DIR): %w", dir, err)
	}
	s := &Spool{dir: dir, opts: opts, log: log, lock: lock, batch: &commit{done: make(chan struct{})}}
	if err := s.recover(); err != nil {
		lock.Close()
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
	s.cursor = s.readCursor()
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
		}
		events := 0
		good := scan(b, start, func(byte, []byte, int, int) bool {
			events++
			return true
		}, func(st, end int) {
			s.log.Error().Str("segment", filepath.Base(s.segPath(seq))).Int("offset", st).Int("bytes", end-st).
				Msg("spool: damaged record skipped; the records after it are kept")
		})
		if good < len(b) {
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
	if s.events > 0 {
		s.log.Info().Int("events", s.events).Int64("bytes", s.bytes).Msg("spool: recovered undrained events")
	}
	return nil
}

func (s *Spool) readCursor() position {
	b, err := os.ReadFile(filepath.Join(s.dir, cursorFile))
	if err != nil {
		return position{}
	}
	var p position
	if _, err := fmt.Sscanf(string(b), "%x %d", &p.seq, &p.off); err != nil {
		s.log.Warn().Err(err).Msg("spool: unreadable cursor; draining from the oldest segment (duplicates are filtered by event id)")
		return position{}
	}
	return p
}

// writeCursor persists the drain position atomically (write, fsync, rename).
func (s *Spool) writeCursor(p position) error {
	tmp := filepath.Join(s.dir, cursorFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(f, "%x %d\n", p.seq, p.off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, cursorFile)); err != nil {
		return err
	}
	return syncDir(s.dir)
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
	rec := appendRecord(nil, flags, event.AppendBinary(nil, topic, ev))
	s.mu.Lock()
	if s.bytes+int64(len(rec)) > s.opts.MaxBytes {
		s.mu.Unlock()
		return fmt.Errorf("%w: %d of %d bytes used", ErrFull, s.bytes, s.opts.MaxBytes)
	}
	// Count it now, so concurrent appends cannot overshoot the bound.
	s.bytes += int64(len(rec))
	s.events++
	c := s.batch
	if s.opts.NoGroupCommit {
		c = &commit{done: make(chan struct{})}
	}
	s.queue = append(s.queue, pending{rec: rec, commit: c})
	lead := !s.flushing
	s.flushing = true
	s.mu.Unlock()
	if lead {
		s.flushLoop()
	}
	<-c.done
	return c.err
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
	if _, err := s.active.Write(buf); err != nil {
		// Leave no half batch behind: cut back to the last durable size.
		_ = s.active.Truncate(start)
		return fmt.Errorf("spool write: %w", err)
	}
	if err := s.active.Sync(); err != nil {
		_ = s.active.Truncate(start)
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
	roll := len(s.segs) == 0 || s.segs[len(s.segs)-1].size >= s.opts.SegmentBytes
	switch {
	case len(s.segs) == 0:
		seq = s.cursor.seq
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
	s.active = f
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
// reading a bounded chunk. It returns them and the offset after the last.
func (s *Spool) peekSegment(sg segment, start int64, limit int) ([]Record, int64, error) {
	for chunk := int64(peekChunk); ; chunk *= 2 {
		end := min(start+chunk, sg.size)
		b, err := readRange(s.segPath(sg.seq), start, end)
		if err != nil {
			return nil, start, err
		}
		var out []Record
		var derr error
		good := scan(b, 0, func(flags byte, payload []byte, _, e int) bool {
			topic, ev, err := event.DecodeBinary(payload)
			if err != nil {
				derr = fmt.Errorf("spool: decode record: %w", err)
				return false
			}
			out = append(out, Record{Topic: topic, Event: ev, Uncertain: flags&FlagUncertain != 0,
				end: position{seq: sg.seq, off: start + int64(e)}})
			return len(out) < limit
		}, nil)
		switch {
		case derr != nil:
			return out, start, derr
		case len(out) > 0:
			return out, out[len(out)-1].end.off, nil
		case end == sg.size:
			// Nothing whole in the rest of the segment (recovery cut torn tails,
			// so this is damage): step over it.
			return nil, start + int64(max(good, len(b))), nil
		}
		// The chunk ended inside one large record: read more.
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
	if err := s.writeCursor(cur); err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	for _, seq := range remove {
		if err := os.Remove(s.segPath(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn().Err(err).Msg("spool: could not delete a drained segment")
		}
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

// Close releases the active segment file and the directory lock.
func (s *Spool) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	var err error
	if s.active != nil {
		err = s.active.Close()
		s.active = nil
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
	return err
}

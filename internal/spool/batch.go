package spool

import (
	"fmt"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// AppendBatch writes evs[i] with flags[i], in order, and returns once they
// are on disk — made durable together (one fsync, unless NoGroupCommit).
// It appends the longest prefix that fits the bound and returns how many
// that was, with ErrFull when not all did.
func (s *Spool) AppendBatch(topic string, evs []*event.Event, flags []byte) (int, error) {
	bins := make([][]byte, len(evs))
	for i, ev := range evs {
		bins[i] = event.AppendBinary(nil, topic, ev)
	}
	return s.appendEncoded(bins, flags)
}

// appendEncoded is AppendBatch of events already encoded (AppendBinary).
func (s *Spool) appendEncoded(bins [][]byte, flags []byte) (int, error) {
	recs := make([][]byte, len(bins))
	for i, b := range bins {
		recs[i] = appendRecord(nil, flags[i], b)
	}
	s.mu.Lock()
	n := 0
	var commits []*commit // each record's
	for _, rec := range recs {
		if s.bytes+int64(len(rec)) > s.opts.MaxBytes {
			break
		}
		s.bytes += int64(len(rec))
		s.events++
		c := s.batch
		if s.opts.NoGroupCommit {
			c = &commit{done: make(chan struct{})}
		}
		commits = append(commits, c)
		s.queue = append(s.queue, pending{rec: rec, commit: c})
		n++
	}
	used := s.bytes
	if n == 0 {
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: %d of %d bytes used", ErrFull, used, s.opts.MaxBytes)
	}
	lead := !s.flushing
	s.flushing = true
	s.mu.Unlock()
	if lead {
		s.flushLoop()
	}
	for i, c := range commits {
		<-c.done
		if c.err != nil {
			// The records before it are durable; a failed write fails its
			// commit, and what is queued behind it is not acknowledged.
			for _, later := range commits[i+1:] {
				<-later.done
			}
			return i, c.err
		}
	}
	if n < len(bins) {
		return n, fmt.Errorf("%w: %d of %d bytes used", ErrFull, used, s.opts.MaxBytes)
	}
	return n, nil
}

// AppendBatch writes evs (flags[i] for evs[i]) to the topic's spool, in
// order, durable together; it appends the longest prefix that fits the
// shared bound and returns its length, with ErrFull when not all fit.
func (s *Set) AppendBatch(topic string, evs []*event.Event, flags []byte) (int, error) {
	return s.appendBatch(topic, evs, flags, true)
}

// appendBatch is AppendBatch; unbounded, it ignores the shared bound (the
// migration of an older spool, which is on disk already).
func (s *Set) appendBatch(topic string, evs []*event.Event, flags []byte, bounded bool) (int, error) {
	// Encoded outside the lock every topic's appends share.
	bins, sizes := make([][]byte, len(evs)), make([]int64, len(evs))
	for i, ev := range evs {
		bins[i] = event.AppendBinary(nil, topic, ev)
		sizes[i] = int64(headerSize + len(bins[i]))
	}
	s.mu.Lock()
	var fit, total int64
	for i := range evs {
		if bounded && s.bytes+total+sizes[i] > s.opts.MaxBytes {
			break
		}
		total += sizes[i]
		fit++
	}
	if fit == 0 {
		used := s.bytes
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: %d of %d bytes used", ErrFull, used, s.opts.MaxBytes)
	}
	sp := s.topics[topic]
	if sp == nil {
		if err := event.ValidateStreamTopic(topic); err != nil {
			s.mu.Unlock()
			return 0, err
		}
		var err error
		if sp, err = s.openTopic(topic); err != nil {
			s.mu.Unlock()
			return 0, err
		}
	}
	// Reserved now, so concurrent appends cannot overshoot the bound.
	s.bytes += total
	s.inflight += total
	used := s.bytes
	s.mu.Unlock()
	n, err := sp.appendEncoded(bins[:fit], flags[:fit])
	var written int64
	for _, sz := range sizes[:n] {
		written += sz
	}
	s.mu.Lock()
	s.inflight -= total
	s.bytes -= total - written
	s.mu.Unlock()
	if err == nil && int(fit) < len(evs) {
		err = fmt.Errorf("%w: %d of %d bytes used", ErrFull, used, s.opts.MaxBytes)
	}
	return n, err
}

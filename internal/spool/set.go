package spool

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Set is the spool as the relay uses it: one Spool per topic under one
// directory, so each topic keeps its own order and drains on its own — a
// topic Redis refuses, or a Cluster shard that is down, holds back only
// itself. The size bound (Options.MaxBytes) is shared by all topics.
//
//	<dir>/LOCK              flock: one process per spool directory
//	<dir>/ID                this spool's name (drain dedup keys in Redis)
//	<dir>/topics/<topic>/   a Spool: segments and cursor
//
// Segments at the top of <dir> come from versions that kept one spool for
// every topic: Open moves their undrained records into the topics' spools.
type Set struct {
	dir  string
	opts Options
	log  zerolog.Logger
	lock *os.File
	id   string

	mu       sync.Mutex
	topics   map[string]*Spool
	bytes    int64 // undrained bytes of all topics, including appends under way
	inflight int64 // bytes of appends under way (reserved, not yet returned)
}

// OpenSet opens (creating if needed) the spool set in dir and recovers
// every topic's spool.
func OpenSet(dir string, opts Options, log zerolog.Logger) (*Set, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if err := os.MkdirAll(filepath.Join(dir, "topics"), 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Set{dir: dir, opts: opts, log: log, lock: lock, topics: map[string]*Spool{}}
	if s.id, err = readOrCreateID(filepath.Join(dir, "ID")); err != nil {
		s.Close()
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, "topics"))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || event.ValidateStreamTopic(e.Name()) != nil {
			continue
		}
		sp, err := s.openTopic(e.Name())
		if err != nil {
			s.Close()
			return nil, err
		}
		s.bytes += sp.Stats().Bytes
	}
	if err := s.migrate(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// readOrCreateID returns the spool's name, made once at random: drain
// dedup keys in Redis carry it, so they survive restarts of this spool and
// never collide with another sidecar's.
func readOrCreateID(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	var raw [8]byte
	_, _ = rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("spool id: %w", err)
	}
	return id, nil
}

// ID is the spool's name.
func (s *Set) ID() string { return s.id }

// openTopic opens a topic's spool; called with mu held or before use.
func (s *Set) openTopic(topic string) (*Spool, error) {
	o := s.opts
	o.MaxBytes = 1 << 62 // the Set enforces the shared bound
	sp, err := Open(filepath.Join(s.dir, "topics", topic), o, s.log.With().Str("topic", topic).Logger())
	if err != nil {
		return nil, fmt.Errorf("spool of topic %s: %w", topic, err)
	}
	s.topics[topic] = sp
	return sp, nil
}

// migrate moves an older version's single spool (segments at the top of
// dir) into the per-topic spools, in order, then acknowledges it there. A
// crash part-way repeats the move of what was not acknowledged: at worst a
// duplicate (same event id), never a loss.
func (s *Set) migrate() error {
	if segs, _ := filepath.Glob(filepath.Join(s.dir, "*"+segExt)); len(segs) == 0 {
		return nil
	}
	legacy, err := openNoLock(s.dir, s.opts, s.log)
	if err != nil {
		return fmt.Errorf("spool: older spool: %w", err)
	}
	defer legacy.closeFiles()
	moved := 0
	for {
		recs, err := legacy.Peek(256)
		if err != nil {
			return fmt.Errorf("spool: older spool: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			var flags byte
			if r.Uncertain {
				flags = FlagUncertain
			}
			if _, err := s.appendBatch(r.Topic, []*event.Event{r.Event}, []byte{flags}, false); err != nil {
				return fmt.Errorf("spool: moving older spool: %w", err)
			}
		}
		if err := legacy.Ack(recs); err != nil {
			return fmt.Errorf("spool: older spool: %w", err)
		}
		moved += len(recs)
	}
	if moved > 0 {
		s.log.Info().Int("events", moved).Msg("spool: moved an older single spool into per-topic spools")
	}
	return nil
}

// Append writes (topic, ev) to the topic's spool and returns once it is on
// disk. ErrFull when the shared bound would be passed.
func (s *Set) Append(topic string, ev *event.Event, flags byte) error {
	_, err := s.appendBatch(topic, []*event.Event{ev}, []byte{flags}, true)
	return err
}

// Topics lists the topics that hold undrained records, sorted.
func (s *Set) Topics() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for t, sp := range s.topics {
		if !sp.Empty() {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// Peek returns up to limit undrained records of topic, oldest first.
func (s *Set) Peek(topic string, limit int) ([]Record, error) {
	sp := s.get(topic)
	if sp == nil {
		return nil, nil
	}
	return sp.Peek(limit)
}

// Ack marks topic's records up to the last of drained as drained.
func (s *Set) Ack(topic string, drained []Record) error {
	sp := s.get(topic)
	if sp == nil || len(drained) == 0 {
		return nil
	}
	err := sp.Ack(drained)
	// Recount rather than subtract: appends to this topic may run
	// meanwhile. Appends under way may be counted twice until the next
	// recount — the bound errs on the safe side.
	s.mu.Lock()
	total := s.inflight
	for _, t := range s.topics {
		total += t.Stats().Bytes
	}
	s.bytes = total
	s.mu.Unlock()
	return err
}

// Empty reports whether topic has nothing undrained (nor an append under way).
func (s *Set) Empty(topic string) bool {
	sp := s.get(topic)
	return sp == nil || sp.Empty()
}

func (s *Set) get(topic string) *Spool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topics[topic]
}

// Stats sums every topic's spool.
func (s *Set) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{MaxBytes: s.opts.MaxBytes, Bytes: s.bytes}
	for _, sp := range s.topics {
		ts := sp.Stats()
		st.Events += ts.Events
		st.Segments += ts.Segments
	}
	return st
}

// Close closes every topic's spool and releases the directory lock.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, sp := range s.topics {
		errs = append(errs, sp.Close())
	}
	s.topics = map[string]*Spool{}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
		s.lock = nil
	}
	return errors.Join(errs...)
}

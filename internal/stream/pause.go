package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// PauseKey is set while an operator has paused group's deliveries of topic;
// its value says who paused it and when (PauseInfo as JSON). Every replica's
// subscriber reads it, at most PauseCheck old.
func PauseKey(topic, group string) string { return Key(topic) + ":paused:" + group }

// PauseCheck is how often a subscriber reads its pause key: a pause or a
// resume reaches every replica within it.
const PauseCheck = time.Second

// PauseSettle is how long after the pause key is set every subscriber of
// the group has stopped reading: its view of the key is at most PauseCheck
// old, and an XREADGROUP it had already begun blocks at most PauseCheck
// more (go-redis cannot cancel a blocked read). After it, no entry is read
// until the resume; deliveries begun before it finish.
const PauseSettle = 2*PauseCheck + 500*time.Millisecond

// PauseInfo is the value of a pause key.
type PauseInfo struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// Pause sets group's pause key: from the next PauseCheck on, no subscriber
// of the group reads or claims anything; deliveries under way finish.
func Pause(ctx context.Context, rdb redis.Cmdable, topic, group string, info PauseInfo) error {
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := rdb.Set(ctx, PauseKey(topic, group), b, 0).Err(); err != nil {
		return fmt.Errorf("set %s: %w", PauseKey(topic, group), err)
	}
	return nil
}

// Resume deletes group's pause key; it reports whether the group was paused.
func Resume(ctx context.Context, rdb redis.Cmdable, topic, group string) (bool, error) {
	n, err := rdb.Del(ctx, PauseKey(topic, group)).Result()
	if err != nil {
		return false, fmt.Errorf("del %s: %w", PauseKey(topic, group), err)
	}
	return n > 0, nil
}

// Paused reports whether group's deliveries of topic are paused.
func Paused(ctx context.Context, rdb redis.Cmdable, topic, group string) (bool, error) {
	n, err := rdb.Exists(ctx, PauseKey(topic, group)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, fmt.Errorf("exists %s: %w", PauseKey(topic, group), err)
	}
	return n > 0, nil
}

// pauseFlag is a subscriber's view of its pause key, shared by the reader
// and the workers. changed is closed (and replaced) on every change, so a
// worker waiting out a retry backoff wakes up when the group is paused.
type pauseFlag struct {
	mu      sync.Mutex
	on      bool
	checked time.Time // last successful read of the key
	changed chan struct{}
}

func newPauseFlag() *pauseFlag { return &pauseFlag{changed: make(chan struct{})} }

// get returns the state and a channel closed at its next change.
func (p *pauseFlag) get() (bool, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.on, p.changed
}

func (p *pauseFlag) isOn() bool { on, _ := p.get(); return on }

// age is how long ago the key was last read (forever: never).
func (p *pauseFlag) age() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.checked.IsZero() {
		return time.Duration(1<<63 - 1)
	}
	return time.Since(p.checked)
}

func (p *pauseFlag) set(on bool, at time.Time) (changed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if at.Before(p.checked) {
		return false // an older answer than the one already applied
	}
	p.checked = at
	if p.on == on {
		return false
	}
	p.on = on
	close(p.changed)
	p.changed = make(chan struct{})
	return true
}

// refreshPause reads the pause key once.
func (s *Subscriber) refreshPause(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	asked := time.Now()
	on, err := Paused(cctx, s.rdb, s.cfg.Topic, s.cfg.Group)
	if err != nil {
		return err
	}
	if s.pause.set(on, asked) {
		if on {
			s.log.Info().Msg("subscription paused by an operator: reading and claiming nothing until resumed")
		} else {
			s.log.Info().Msg("subscription resumed by an operator")
		}
	}
	return nil
}

// watchPause keeps the pause flag at most PauseCheck old while the
// subscriber runs, also while the reader is blocked in XREADGROUP.
func (s *Subscriber) watchPause(ctx context.Context, done <-chan struct{}) {
	t := time.NewTicker(s.cfg.PauseCheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if err := s.refreshPause(ctx); err != nil {
			s.log.Debug().Err(err).Msg("reading the pause key failed; keeping the last known state")
		}
	}
}

// sleepUnlessPaused waits d; it returns false when ctx ends or the group
// is paused before or during the wait.
func (s *Subscriber) sleepUnlessPaused(ctx context.Context, d time.Duration) bool {
	on, changed := s.pause.get()
	if on {
		return false
	}
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return !s.pause.isOn()
		case <-changed:
			if on, changed = s.pause.get(); on {
				return false
			}
		}
	}
}

// waitUnpaused blocks while the group is paused; false when ctx ends.
func (s *Subscriber) waitUnpaused(ctx context.Context) bool {
	for {
		on, changed := s.pause.get()
		if !on {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-changed:
		}
	}
}

// drainWorkers waits until every token is back — no entry handed out
// before is still with a worker — and returns them; false when ctx ends.
func drainWorkers(ctx context.Context, tokens chan struct{}) bool {
	n := cap(tokens)
	for i := range n {
		select {
		case <-tokens:
		case <-ctx.Done():
			release(tokens, i)
			return false
		}
	}
	release(tokens, n)
	return true
}

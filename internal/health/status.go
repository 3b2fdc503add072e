package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// Subscription is what status needs of a subscriber.
type Subscription interface {
	Running() bool
	Config() stream.SubscriptionConfig
	Stats() stream.Stats
}

// ConsumerGauges receives the Redis-side figures of each subscription (metrics).
type ConsumerGauges interface {
	SetConsumer(topic, group string, lag, pending int64, oldest time.Duration, dlq int64)
}

// ConsumerState is a subscription's position in Redis, as last read.
type ConsumerState struct {
	Lag           int64         `json:"lag"`     // entries not yet read by the group (-1: unknown)
	Pending       int64         `json:"pending"` // read, not acknowledged
	OldestPending time.Duration `json:"-"`
	OldestSeconds float64       `json:"oldest_pending_seconds"`
	DLQLength     int64         `json:"dlq_length"`
	// Paused is an operator's pause of the group (the admin API): its
	// subscribers read nothing until it is resumed.
	Paused bool      `json:"paused"`
	ReadAt time.Time `json:"read_at,omitzero"`
	Error  string    `json:"error,omitempty"`
}

// Sources are the parts of the process /v1/status reports on.
type Sources struct {
	Service, Consumer, RedisURL, Version string
	Monitor                              *Monitor
	Subscriptions                        []Subscription
	Spool                                func() any                          // the relay's stats
	Topics                               func() map[string]map[string]uint64 // publishes per topic and outcome
	Fallbacks                            func() map[string]uint64
	Retention                            func() any     // per topic: length, safe point, held back by which group; may be nil
	Gauges                               ConsumerGauges // may be nil
	// OnRefresh runs on every refresh tick (e.g. to set spool gauges); may be nil.
	OnRefresh func()
	// URLs are the subscriptions' webhook URLs by topic/group, as they may
	// be shown (credentials redacted); may be nil.
	URLs map[string]string
	// Redact removes credentials from the encoded report — a last error
	// may quote a URL or a server's reply; nil = none. /v1/status is
	// open to every client that reaches the listener.
	Redact func([]byte) []byte
}

// Status reads the subscriptions' Redis-side state on a ticker (not per
// request, so a scrape storm cannot load Redis) and serves /v1/status.
type Status struct {
	rdb      redis.UniversalClient
	src      Sources
	interval time.Duration
	log      zerolog.Logger
	started  time.Time

	mu        sync.Mutex
	consumers map[string]ConsumerState // topic/group →
	nodes     []NodeStatus             // Cluster only
}

// NewStatus returns a Status; Run refreshes it.
func NewStatus(rdb redis.UniversalClient, src Sources, interval time.Duration, log zerolog.Logger) *Status {
	return &Status{rdb: rdb, src: src, interval: interval, log: log, started: time.Now(), consumers: map[string]ConsumerState{}}
}

// Run refreshes the consumer figures every interval until ctx is done.
func (s *Status) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		s.Refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh reads every subscription's lag, pending and DLQ length once.
func (s *Status) Refresh(ctx context.Context) {
	if s.src.OnRefresh != nil {
		s.src.OnRefresh()
	}
	if nodes := ReadNodes(ctx, s.rdb); nodes != nil {
		s.mu.Lock()
		s.nodes = nodes
		s.mu.Unlock()
	}
	for _, sub := range s.src.Subscriptions {
		c := sub.Config()
		st := ReadConsumer(ctx, s.rdb, c.Topic, c.Group)
		if s.src.Gauges != nil && st.Error == "" {
			s.src.Gauges.SetConsumer(c.Topic, c.Group, st.Lag, st.Pending, st.OldestPending, st.DLQLength)
		}
		s.mu.Lock()
		s.consumers[c.Topic+"/"+c.Group] = st
		s.mu.Unlock()
	}
}

// ReadConsumer reads a group's lag, pending count, oldest pending entry and
// DLQ length from Redis.
func ReadConsumer(ctx context.Context, rdb redis.UniversalClient, topic, group string) ConsumerState {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st := ConsumerState{Lag: -1, ReadAt: time.Now()}
	key := stream.Key(topic)
	groups, err := rdb.XInfoGroups(ctx, key).Result()
	if err != nil {
		st.Error = err.Error()
		return st
	}
	found, lastID, read := false, "", int64(0)
	for _, g := range groups {
		if g.Name == group {
			found = true
			st.Lag, st.Pending, lastID, read = g.Lag, g.Pending, g.LastDeliveredID, g.EntriesRead
		}
	}
	if !found {
		st.Error = "consumer group " + group + " does not exist (yet)"
		return st
	}
	if st.Lag < 0 || (read == 0 && st.Lag > 0 && lastID != "0-0") {
		// A lag Redis cannot tell (after a deletion or a seek), or a group
		// that has read entries yet reports none read (the embedded
		// dev-mode server, which gives the stream's length as lag): count
		// the entries past the group's position, up to a bound; beyond it
		// keep Redis's figure. (A group at 0-0 that read nothing has the
		// exact lag already.)
		if n := countAfter(ctx, rdb, key, lastID); n >= 0 {
			st.Lag = n
		}
	}
	if st.Pending > 0 {
		if p, err := rdb.XPending(ctx, key, group).Result(); err == nil {
			st.OldestPending = time.Since(time.UnixMilli(streamIDMillis(p.Lower)))
			st.OldestSeconds = st.OldestPending.Seconds()
		}
	}
	n, err := rdb.XLen(ctx, stream.DLQKey(topic)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		st.Error = err.Error()
	}
	st.DLQLength = n
	if st.Paused, err = stream.Paused(ctx, rdb, topic, group); err != nil && st.Error == "" {
		st.Error = err.Error()
	}
	return st
}

// lagScan bounds the entries countAfter reads (whole entries: there is
// no cheaper way to count a range): a lag it cannot count within it keeps
// Redis's figure rather than costing Redis a long scan every refresh.
const lagScan = 1000

// countAfter counts the entries after id, or -1 past lagScan or on error.
func countAfter(ctx context.Context, rdb redis.UniversalClient, key, id string) int64 {
	msgs, err := rdb.XRangeN(ctx, key, "("+id, "+", lagScan+1).Result()
	if err != nil || len(msgs) > lagScan {
		return -1
	}
	return int64(len(msgs))
}

func streamIDMillis(id string) int64 {
	ms, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseInt(ms, 10, 64)
	return n
}

// SubscriptionStatus is one subscription in /v1/status.
type SubscriptionStatus struct {
	Topic    string `json:"topic"`
	Group    string `json:"group"`
	Consumer string `json:"consumer"`
	URL      string `json:"url,omitempty"` // credentials redacted
	Running  bool   `json:"running"`
	ConsumerState
	stream.Stats
}

// Report is the body of /v1/status.
type StatusReport struct {
	Service       string                       `json:"service"`
	Consumer      string                       `json:"consumer"`
	Version       string                       `json:"version"`
	UptimeSeconds float64                      `json:"uptime_seconds"`
	Redis         RedisStatus                  `json:"redis"`
	Spool         any                          `json:"spool"`
	Subscriptions []SubscriptionStatus         `json:"subscriptions"`
	Topics        map[string]map[string]uint64 `json:"topics"`
	Fallbacks     map[string]uint64            `json:"fallbacks"`
	Retention     any                          `json:"retention,omitempty"`
}

// RedisStatus is Redis in /v1/status: reachability and the INFO facts.
type RedisStatus struct {
	URL string `json:"url"`
	RedisState
	RedisInfo
	Persistent bool `json:"persistent"`
	// Nodes lists every Cluster node, masters and replicas (absent
	// elsewhere); the facts above are one node's.
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// Report assembles the status now.
func (s *Status) Report() StatusReport {
	info := s.src.Monitor.Info()
	rep := StatusReport{
		Service: s.src.Service, Consumer: s.src.Consumer, Version: s.src.Version,
		UptimeSeconds: time.Since(s.started).Seconds(),
		Redis:         RedisStatus{URL: s.src.RedisURL, RedisState: s.src.Monitor.State(), RedisInfo: info, Persistent: info.Persistent()},
		Subscriptions: []SubscriptionStatus{},
	}
	if s.src.Spool != nil {
		rep.Spool = s.src.Spool()
	}
	if s.src.Topics != nil {
		rep.Topics = s.src.Topics()
	}
	if s.src.Fallbacks != nil {
		rep.Fallbacks = s.src.Fallbacks()
	}
	if s.src.Retention != nil {
		rep.Retention = s.src.Retention()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rep.Redis.Nodes = s.nodes
	for _, sub := range s.src.Subscriptions {
		c := sub.Config()
		rep.Subscriptions = append(rep.Subscriptions, SubscriptionStatus{
			Topic: c.Topic, Group: c.Group, Consumer: c.Consumer, URL: s.src.URLs[c.Topic+"/"+c.Group], Running: sub.Running(),
			ConsumerState: s.consumers[c.Topic+"/"+c.Group], Stats: sub.Stats(),
		})
	}
	return rep
}

// Handler serves /v1/status.
func (s *Status) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		body, err := json.MarshalIndent(s.Report(), "", "  ")
		if err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(`{"error":"status could not be encoded","code":"internal"}` + "\n"))
			return
		}
		if s.src.Redact != nil {
			body = s.src.Redact(body)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(append(body, '\n'))
	})
}

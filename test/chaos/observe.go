package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/stream"
	"github.com/redis/go-redis/v9"
)

// evKey names a logical event: a key's sequence number. The checker
// identifies events by what their bodies say rather than by event id,
// because one logical event may carry several ids (an idempotent retry
// answered from the spool gets an id of its own).
type evKey struct {
	key string
	seq int
}

func (k evKey) String() string { return fmt.Sprintf("%s#%d", k.key, k.seq) }

// parseBody reads the logical event a delivered or stored body is.
func parseBody(b []byte) (evKey, bool) {
	var e eventBody
	if err := json.Unmarshal(b, &e); err != nil || e.Key == "" || e.Seq <= 0 {
		return evKey{}, false
	}
	return evKey{e.Key, e.Seq}, true
}

// entry is a stream or DLQ entry as read at the end.
type entry struct {
	topic    string
	streamID string
	id       string // event id
	idemKey  string
	data     []byte
	// DLQ entries only:
	group, errText, attempts, originalID string
}

// observation is everything the checker judges: what the clients were
// told, what the receivers got, what Redis holds at the end, and what the
// processes did.
type observation struct {
	start    time.Time
	topics   [2]string
	events   []pubEvent
	requests map[string][]request // by receiver name
	streams  []entry
	dlq      []entry
	trapHits int64
	trapLast string
	issues   []issue
	timeline []faultRecord
	// readErr is set when Redis could not be read at the end.
	readErr string
	// unsettled: with every fault healed, the system did not converge
	// (spools empty, nothing pending or unread) within the settle deadline.
	unsettled   bool
	settleState string
	logDir      string
}

// issue is something a sidecar process did that it must not.
type issue struct {
	at   time.Time
	what string
}

// topicKey is a topic's stream key (the DLQ is topicKey + ":dlq").
func topicKey(topic string) string { return "sidecar:{" + topic + "}" }

// readEntries reads a whole stream, in pages.
func readEntries(ctx context.Context, rdb redis.UniversalClient, topic, key string) ([]entry, error) {
	var out []entry
	from := "-"
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		msgs, err := rdb.XRangeN(cctx, key, from, "+", 2000).Result()
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) {
			return out, fmt.Errorf("XRANGE %s: %w", key, err)
		}
		for _, m := range msgs {
			out = append(out, entryOf(topic, m))
		}
		if len(msgs) < 2000 {
			return out, nil
		}
		from = "(" + msgs[len(msgs)-1].ID
	}
}

func entryOf(topic string, m redis.XMessage) entry {
	s := func(k string) string { v, _ := m.Values[k].(string); return v }
	return entry{topic: topic, streamID: m.ID, id: s("id"), idemKey: s("idempotency_key"), data: []byte(s("data")),
		group: s("group"), errText: s("error"), attempts: s("attempts"), originalID: s("original_id")}
}

// readDLQ reads both topics' dead-letter streams once.
func readDLQ(ctx context.Context, rdb redis.UniversalClient, topics [2]string) ([]entry, error) {
	var out []entry
	for _, t := range topics {
		d, err := readEntries(ctx, rdb, t, topicKey(t)+":dlq")
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
	}
	return out, nil
}

// readRedis reads both topics' streams and dead-letter streams, retrying
// for a while: at the end Redis should be healthy, but a failover may just
// be settling.
func readRedis(ctx context.Context, rdb redis.UniversalClient, topics [2]string) (streams, dlq []entry, err error) {
	err = waitFor(ctx, 30*time.Second, "reading the streams", func() bool {
		streams, dlq = nil, nil
		for _, t := range topics {
			s, e1 := readEntries(ctx, rdb, t, topicKey(t))
			d, e2 := readEntries(ctx, rdb, t, topicKey(t)+":dlq")
			if e1 != nil || e2 != nil {
				return false
			}
			streams, dlq = append(streams, s...), append(dlq, d...)
		}
		return true
	})
	return streams, dlq, err
}

// groupState is one consumer group on one topic, from XINFO GROUPS.
type groupState struct {
	topic, group string
	pending, lag int64
	lastRead     string // last-delivered-id
	last         string // the stream's newest entry
	err          string
}

// caughtUp reports a group with nothing pending that has read up to the
// stream's newest entry. XINFO's lag is not used: after a replica's full
// resync Redis 7.0 reported lags of hundreds for groups that had read
// everything (their last-delivered-id was the newest entry).
func (g groupState) caughtUp() bool {
	return g.err == "" && g.pending == 0 && (g.last == "" || !stream.IDLess(g.lastRead, g.last))
}

func (g groupState) String() string {
	if g.err != "" {
		return fmt.Sprintf("%s/%s: %s", g.topic, g.group, g.err)
	}
	return fmt.Sprintf("%s/%s: pending %d, read up to %s of %s (lag %d)", g.topic, g.group, g.pending, g.lastRead, g.last, g.lag)
}

func readGroups(ctx context.Context, rdb redis.UniversalClient, topics [2]string, groups []string) []groupState {
	var out []groupState
	for _, t := range topics {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		infos, err := rdb.XInfoGroups(cctx, topicKey(t)).Result()
		var last string
		if err == nil {
			var msgs []redis.XMessage
			msgs, err = rdb.XRevRangeN(cctx, topicKey(t), "+", "-", 1).Result()
			if len(msgs) > 0 {
				last = msgs[0].ID
			}
		}
		cancel()
		for _, g := range groups {
			st := groupState{topic: t, group: g, last: last}
			if err != nil {
				st.err = err.Error()
			} else {
				st.err = "no such group"
				for _, i := range infos {
					if i.Name == g {
						st.err, st.pending, st.lag, st.lastRead = "", i.Pending, i.Lag, i.LastDeliveredID
					}
				}
			}
			out = append(out, st)
		}
	}
	return out
}

func describeGroups(gs []groupState) string {
	var parts []string
	for _, g := range gs {
		parts = append(parts, g.String())
	}
	return strings.Join(parts, "; ")
}

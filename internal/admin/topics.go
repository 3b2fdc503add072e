package admin

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// Topic is one topic in GET /v1/topics.
type Topic struct {
	Topic     string  `json:"topic"`
	Length    int64   `json:"length"`
	FirstID   string  `json:"first_id"`
	LastID    string  `json:"last_id"`
	DLQLength int64   `json:"dlq_length"`
	Groups    []Group `json:"groups"`
	// Error says why the topic could not be read (its key holds another
	// type, say); the other topics are listed all the same.
	Error string `json:"error,omitempty"`
}

// Group is one consumer group of a topic.
type Group struct {
	Group string `json:"group"`
	// Lag is how many entries the group has not read yet; -1 when Redis
	// cannot tell and there are more than lagCountLimit to count.
	Lag             int64  `json:"lag"`
	Pending         int64  `json:"pending"`
	LastDeliveredID string `json:"last_delivered_id"`
	Consumers       int64  `json:"consumers"`
	Paused          bool   `json:"paused"`
	// DLQLength is the group's own dead letters; -1 when the DLQ is too
	// long to count them here (dlqCountLimit).
	DLQLength int64 `json:"dlq_length"`
}

// Bounds of the counting GET /v1/topics does itself.
const (
	lagCountLimit = 10000
	dlqCountLimit = 10000
)

// lagScript counts the entries after a group's last-delivered-id, up to
// ARGV[2], when Redis does not know the lag (after a seek, say).
// KEYS[1] stream; ARGV[1] "(" last-delivered-id, ARGV[2] the bound.
var lagScript = redis.NewScript(`
return #redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
`)

// dlqGroupsScript counts a DLQ's dead letters per group, without sending
// them: KEYS[1] DLQ. Returns group, count, group, count…
var dlqGroupsScript = redis.NewScript(`
local counts, order = {}, {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f = e[2]
  for j = 1, #f, 2 do
    if f[j] == 'group' then
      local g = f[j+1]
      if not counts[g] then counts[g] = 0; order[#order+1] = g end
      counts[g] = counts[g] + 1
    end
  end
end
local out = {}
for _, g in ipairs(order) do out[#out+1] = g; out[#out+1] = counts[g] end
return out
`)

// topics lists the configured topics and every topic stream in Redis.
func (h *Handler) topics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	names, err := h.topicNames(ctx)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	out := make([]Topic, 0, len(names))
	for _, name := range names {
		t, err := h.topic(ctx, name)
		if err != nil {
			if !stream.IsRejected(err) {
				writeRedisError(w, err) // Redis unavailable: no partial answer
				return
			}
			t.Error = err.Error()
		}
		out = append(out, t)
	}
	writeJSON(w, http.StatusOK, map[string][]Topic{"topics": out})
}

// topicNames returns the configured topics and those whose stream key a
// SCAN finds (on Cluster, on every master), sorted.
func (h *Handler) topicNames(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	for _, t := range h.cfg.Topics {
		seen[t] = true
	}
	var mu sync.Mutex
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := c.ScanType(ctx, cursor, "sidecar:{*}", 1000, "stream").Result()
			if err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			mu.Lock()
			for _, k := range keys {
				if t, ok := topicOf(k); ok {
					seen[t] = true
				}
			}
			mu.Unlock()
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := h.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, h.rdb)
	}
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(seen))
	for t := range seen {
		names = append(names, t)
	}
	slices.Sort(names)
	return names, nil
}

// topicOf returns the topic whose stream key is key (not a DLQ or another
// key of the topic's).
func topicOf(key string) (string, bool) {
	t, ok := strings.CutPrefix(key, "sidecar:{")
	if !ok {
		return "", false
	}
	if t, ok = strings.CutSuffix(t, "}"); !ok || strings.ContainsAny(t, "{}") {
		return "", false
	}
	if event.ValidateTopic(t) != nil || stream.Key(t) != key {
		return "", false
	}
	return t, true
}

// topic reads one topic's stream, DLQ and groups.
func (h *Handler) topic(ctx context.Context, name string) (Topic, error) {
	key := stream.Key(name)
	t := Topic{Topic: name, Groups: []Group{}}
	info, err := h.rdb.XInfoStream(ctx, key).Result()
	switch {
	case isNoSuchKey(err):
	case err != nil:
		return t, fmt.Errorf("xinfo stream %s: %w", key, err)
	default:
		t.Length, t.FirstID, t.LastID = info.Length, info.FirstEntry.ID, info.LastEntry.ID
	}
	if t.DLQLength, err = h.rdb.XLen(ctx, stream.DLQKey(name)).Result(); err != nil {
		return t, fmt.Errorf("xlen %s: %w", stream.DLQKey(name), err)
	}
	groups, err := h.rdb.XInfoGroups(ctx, key).Result()
	if err != nil && !isNoSuchKey(err) {
		return t, fmt.Errorf("xinfo groups %s: %w", key, err)
	}
	dead := map[string]int64{}
	if t.DLQLength > 0 && t.DLQLength <= dlqCountLimit && len(groups) > 0 {
		if dead, err = h.deadPerGroup(ctx, name); err != nil {
			return t, err
		}
	}
	for _, g := range groups {
		grp := Group{Group: g.Name, Lag: g.Lag, Pending: g.Pending, LastDeliveredID: g.LastDeliveredID,
			Consumers: g.Consumers, DLQLength: dead[g.Name]}
		if t.DLQLength > dlqCountLimit {
			grp.DLQLength = -1
		}
		if grp.Lag < 0 {
			n, err := lagScript.Run(ctx, h.rdb, []string{key}, "("+g.LastDeliveredID, lagCountLimit+1).Int64()
			if err != nil {
				return t, fmt.Errorf("counting lag of %s %s: %w", key, g.Name, err)
			}
			if n <= lagCountLimit {
				grp.Lag = n
			}
		}
		if grp.Paused, err = stream.Paused(ctx, h.rdb, name, g.Name); err != nil {
			return t, err
		}
		t.Groups = append(t.Groups, grp)
	}
	return t, nil
}

// deadPerGroup counts topic's dead letters per group.
func (h *Handler) deadPerGroup(ctx context.Context, topic string) (map[string]int64, error) {
	res, err := dlqGroupsScript.Run(ctx, h.rdb, []string{stream.DLQKey(topic)}).Slice()
	if err != nil {
		return nil, fmt.Errorf("counting dead letters of %s: %w", stream.DLQKey(topic), err)
	}
	out := map[string]int64{}
	for i := 0; i+1 < len(res); i += 2 {
		g, _ := res[i].(string)
		n, _ := res[i+1].(int64)
		out[g] = n
	}
	return out, nil
}

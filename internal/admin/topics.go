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
	// Partitions is the partition count of a partitioned topic (absent:
	// not partitioned); the figures above are its partitions' summed.
	Partitions int `json:"partitions,omitempty"`
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

// topics lists the configured topics and every topic stream in Redis; a
// partitioned topic is one entry, its partitions summed.
func (h *Handler) topics(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	all, err := h.topicParts(ctx)
	if err != nil {
		writeRedisError(w, err)
		return
	}
	out := make([]Topic, 0, len(all))
	for _, p := range all {
		t, err := h.partsTopic(ctx, p)
		if err != nil {
			writeRedisError(w, err) // Redis unavailable: no partial answer
			return
		}
		out = append(out, t)
	}
	writeJSON(w, http.StatusOK, map[string][]Topic{"topics": out})
}

// topicParts returns the configured topics and those whose stream key a
// SCAN finds (on Cluster, on every master), sorted, each with as many
// partitions as the config says or the streams found show, if more.
func (h *Handler) topicParts(ctx context.Context) ([]parts, error) {
	n := map[string]int{}
	for _, t := range h.cfg.Topics {
		n[t] = max(h.cfg.Partitions[t], 1)
	}
	for t, k := range h.cfg.Partitions {
		n[t] = max(k, 1)
	}
	err := h.scanStreams(ctx, "sidecar:{*}", func(key string) {
		if t, k, ok := topicOf(key); ok {
			n[t] = max(n[t], h.cfg.Partitions[t], k+1)
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]parts, 0, len(n))
	for t, k := range n {
		out = append(out, parts{topic: t, n: k})
	}
	slices.SortFunc(out, func(a, b parts) int { return strings.Compare(a.topic, b.topic) })
	return out, nil
}

// topicOf returns the user topic and partition whose stream key is key
// (not a DLQ or another key of the topic's).
func topicOf(key string) (string, int, bool) {
	t, ok := strings.CutPrefix(key, "sidecar:{")
	if !ok {
		return "", 0, false
	}
	if t, ok = strings.CutSuffix(t, "}"); !ok || strings.ContainsAny(t, "{}") {
		return "", 0, false
	}
	topic, k, ok := partitionOf(t)
	if !ok || event.ValidateTopic(topic) != nil || stream.Key(stream.PartitionTopic(topic, k)) != key {
		return "", 0, false
	}
	return topic, k, true
}

// partsTopic reads a topic: an unpartitioned one as it is, a partitioned
// one partition by partition (a few at once), summed. A partition Redis
// rejects (its key holds another type) is named in Error; the others count.
func (h *Handler) partsTopic(ctx context.Context, p parts) (Topic, error) {
	if !p.partitioned() {
		t, err := h.topic(ctx, p.topic)
		if err != nil && stream.IsRejected(err) {
			t.Error, err = err.Error(), nil
		}
		return t, err
	}
	ts, errs := make([]Topic, p.n), make([]error, p.n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for k := range p.n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ts[k], errs[k] = h.topic(ctx, p.of(k))
		})
	}
	wg.Wait()
	sum := Topic{Topic: p.topic, Partitions: p.n, Groups: []Group{}}
	at := map[string]int{} // group → its index in sum.Groups
	var rejected []string
	for k, t := range ts {
		if err := errs[k]; err != nil {
			if !stream.IsRejected(err) {
				return sum, err
			}
			rejected = append(rejected, fmt.Sprintf("partition %d: %v", k, err))
		}
		sum.Length += t.Length
		if t.Length > 0 {
			if sum.FirstID == "" || idLess(t.FirstID, sum.FirstID) {
				sum.FirstID = t.FirstID
			}
			sum.LastID = maxID(sum.LastID, t.LastID)
		}
		sum.DLQLength += t.DLQLength
		for _, g := range t.Groups {
			i, ok := at[g.Group]
			if !ok {
				at[g.Group] = len(sum.Groups)
				sum.Groups = append(sum.Groups, Group{Group: g.Group, LastDeliveredID: g.LastDeliveredID})
				i = len(sum.Groups) - 1
			}
			addGroup(&sum.Groups[i], g)
		}
	}
	sum.Error = strings.Join(rejected, "; ")
	return sum, nil
}

// addGroup adds one partition's figures of a group to the sum: counts
// add up (unknown, -1, stays unknown), the consumers are those of the
// partition that has most (the same sidecars read every partition), the
// group is paused when any partition is (resume covers them all), and
// its last delivered id is the latest.
func addGroup(sum *Group, g Group) {
	addCount := func(a *int64, b int64) {
		if *a < 0 || b < 0 {
			*a = -1
			return
		}
		*a += b
	}
	addCount(&sum.Lag, g.Lag)
	addCount(&sum.DLQLength, g.DLQLength)
	sum.Pending += g.Pending
	sum.Consumers = max(sum.Consumers, g.Consumers)
	sum.Paused = sum.Paused || g.Paused
	sum.LastDeliveredID = maxID(sum.LastDeliveredID, g.LastDeliveredID)
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

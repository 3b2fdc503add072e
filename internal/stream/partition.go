package stream

import (
	"context"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// A partitioned topic t with n partitions is n streams: partition 0 is
// t's own stream sidecar:{t} (so a topic can be partitioned later without
// moving its log), partition k ≥ 1 is sidecar:{t#k}, each in its own
// Cluster slot. Inside the sidecar a partition is addressed as the topic
// "t#k": '#' cannot occur in a topic name, so it never collides with one.

// PartitionSep separates a topic from its partition number.
const PartitionSep = "#"

// PartitionTopic is partition k of topic, as an internal topic name.
func PartitionTopic(topic string, k int) string {
	if k == 0 {
		return topic
	}
	return topic + PartitionSep + strconv.Itoa(k)
}

// PartitionTopics lists the internal topics of topic's n partitions.
func PartitionTopics(topic string, n int) []string {
	out := make([]string, max(n, 1))
	for k := range out {
		out[k] = PartitionTopic(topic, k)
	}
	return out
}

// BaseTopic is the user's topic of an internal (partition) topic.
func BaseTopic(t string) string {
	if i := strings.Index(t, PartitionSep); i >= 0 {
		return t[:i]
	}
	return t
}

// PartitionOf is the partition of key among n: FNV-1a (32-bit) of the key
// modulo n. Every sidecar of a topic must use the same n.
func PartitionOf(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// Sink is what a Partitioner publishes to (the relay): per stream topic.
type Sink interface {
	Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error)
	PublishBatch(ctx context.Context, topics []string, evs []*event.Event) ([]event.Receipt, []error)
}

// Partitioner sends each event of a partitioned topic to the partition
// its key picks; other topics pass through. Receipts name the user topic.
type Partitioner struct {
	Next       Sink
	Partitions map[string]int // topic → partition count; absent = 1
}

// StreamTopic is the stream topic ev of topic goes to: the partition of
// its partition key, else of its Idempotency-Key, else of its id.
func (p Partitioner) StreamTopic(topic string, ev *event.Event) string {
	n := p.Partitions[topic]
	if n <= 1 {
		return topic
	}
	key := ev.Extensions[event.PartitionKeyExtension]
	if key == "" && ev.IdempotencyKey != "" {
		// A retry gets a new event id but keeps its Idempotency-Key: it
		// must reach the partition that remembers the key.
		key = ev.IdempotencyKey
	}
	if key == "" {
		key = ev.ID
	}
	return PartitionTopic(topic, PartitionOf(key, n))
}

// Publish publishes ev to its partition of topic.
func (p Partitioner) Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error) {
	rc, err := p.Next.Publish(ctx, p.StreamTopic(topic, ev), ev)
	if rc.Topic != "" {
		rc.Topic = topic
	}
	return rc, err
}

// PublishBatch publishes evs, in order, each to its partition of topic.
func (p Partitioner) PublishBatch(ctx context.Context, topic string, evs []*event.Event) ([]event.Receipt, []error) {
	topics := make([]string, len(evs))
	for i, ev := range evs {
		topics[i] = p.StreamTopic(topic, ev)
	}
	rcs, errs := p.Next.PublishBatch(ctx, topics, evs)
	for i := range rcs {
		if rcs[i].Topic != "" {
			rcs[i].Topic = topic
		}
	}
	return rcs, errs
}

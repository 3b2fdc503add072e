package resp

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// RedisConfig says which consumer group subscribers read through.
type RedisConfig struct {
	Group    string // consumer group: the sidecar's service
	Consumer string // this sidecar's consumer name
	// ClaimTimeout: entries idle this long on another consumer of the group
	// (a dead replica) are taken over.
	ClaimTimeout time.Duration
	// Grace: how long a delivery under way may finish when a feed stops.
	Grace time.Duration
	// Observer counts deliveries (metrics); nil = none.
	Observer stream.Observer
}

// Redis is Streams on the topic streams in Redis: one stream.Subscriber
// per consumed topic, through the group.
//
// A group that does not exist yet starts at the beginning of the stream
// (like a subscription's default start: earliest): a service deployed, or
// down, before it first subscribed still gets what was published for it.
// A Redis Pub/Sub client sees the retained history once, at its first
// SUBSCRIBE; later it continues where the group stopped.
type Redis struct {
	rdb redis.UniversalClient
	cfg RedisConfig
	log zerolog.Logger
}

// NewRedis returns Streams on rdb.
func NewRedis(rdb redis.UniversalClient, cfg RedisConfig, log zerolog.Logger) *Redis {
	return &Redis{rdb: rdb, cfg: cfg, log: log}
}

// Groups counts the topic's consumer groups (XINFO GROUPS).
func (r *Redis) Groups(ctx context.Context, topic string) (int, error) {
	groups, err := r.rdb.XInfoGroups(ctx, stream.Key(topic)).Result()
	if err != nil {
		return 0, fmt.Errorf("xinfo groups %s: %w", stream.Key(topic), err)
	}
	return len(groups), nil
}

// Consume reads topic through the group with concurrency 1 (stream order)
// until ctx is done. A failed delivery (no listener) is retried until the
// feed stops, never dead-lettered: the entry stays pending for the next
// subscriber.
func (r *Redis) Consume(ctx context.Context, topic string, deliver Deliver) error {
	log := r.log.With().Str("topic", topic).Str("group", r.cfg.Group).Logger()
	sub := stream.NewSubscriber(r.rdb, stream.SubscriptionConfig{
		Topic: topic, Group: r.cfg.Group, Consumer: r.cfg.Consumer,
		Concurrency: 1, RetryFor: 0, MaxAttempts: 0,
		Backoff:      backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second},
		ClaimTimeout: r.cfg.ClaimTimeout, Grace: r.cfg.Grace, Observer: r.cfg.Observer,
	}, stream.HandlerFunc(func(ctx context.Context, d stream.Delivery) error {
		return deliver(ctx, d.Event)
	}), log)
	return sub.Run(ctx)
}

// Topics lists the topics whose stream exists (SCAN on every master).
func (r *Redis) Topics(ctx context.Context) ([]string, error) {
	var (
		mu   sync.Mutex
		seen = map[string]struct{}{}
	)
	scan := func(ctx context.Context, c redis.UniversalClient) error {
		it := c.ScanType(ctx, 0, "sidecar:{*}", 1000, "stream").Iterator()
		for it.Next(ctx) {
			if t, ok := topicOf(it.Val()); ok {
				mu.Lock()
				seen[t] = struct{}{}
				mu.Unlock()
			}
		}
		return it.Err()
	}
	var err error
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, r.rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("scan topics: %w", err)
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	return out, nil
}

// topicOf is the topic of a stream key, if it is one (not a DLQ).
func topicOf(key string) (string, bool) {
	t, ok := strings.CutPrefix(key, "sidecar:{")
	if !ok {
		return "", false
	}
	t, ok = strings.CutSuffix(t, "}")
	if !ok || event.ValidateTopic(t) != nil || stream.Key(t) != key {
		return "", false
	}
	return t, true
}

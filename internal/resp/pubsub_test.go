package resp

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// receive reads n Pub/Sub messages, failing after d.
func receive(t *testing.T, ps *redis.PubSub, n int, d time.Duration) []*redis.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var got []*redis.Message
	for len(got) < n {
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), n, err)
		}
		got = append(got, m)
	}
	return got
}

// TestSubscribe: a subscriber receives what is published through the
// ingress, in order, byte for byte, in RESP2 and RESP3.
func TestSubscribe(t *testing.T) {
	f := start(t, fixtureOpts{})
	ctx := context.Background()
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			topic := newTopic(t, "sub")
			ps := redistest.Subscribe(t, f.client(t, proto, ""), topic)
			pub := f.client(t, proto, "")
			want := []string{`{"type":"match_updates","payload":{"matches":[]}}`, "two", "\x00three\r\n"}
			for _, m := range want {
				if err := pub.Publish(ctx, topic, m).Err(); err != nil {
					t.Fatal(err)
				}
			}
			got := receive(t, ps, len(want), 10*time.Second)
			for i, m := range got {
				if m.Channel != topic || m.Payload != want[i] {
					t.Errorf("message %d: got %s %q, want %s %q", i, m.Channel, m.Payload, topic, want[i])
				}
			}
			// Acknowledged once written: nothing stays pending.
			eventually.True(t, 5*time.Second, "no pending entries", func() bool {
				p, err := f.rdb.XPending(ctx, "sidecar:{"+topic+"}", "calendar").Result()
				return err == nil && p.Count == 0
			})
		})
	}
}

// TestSubscriberAway: events published while the only subscriber is gone
// are delivered, in order, when it subscribes again; what it had already
// received is not delivered twice.
func TestSubscriberAway(t *testing.T) {
	f := start(t, fixtureOpts{})
	ctx := context.Background()
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			topic := newTopic(t, "away")
			pub := f.client(t, proto, "")
			sc := f.client(t, proto, "")
			ps := redistest.Subscribe(t, sc, topic)
			if err := pub.Publish(ctx, topic, "before").Err(); err != nil {
				t.Fatal(err)
			}
			receive(t, ps, 1, 10*time.Second)
			_ = ps.Close()
			eventually.True(t, 5*time.Second, "the feed to stop", func() bool { return !f.srv.hub.feeding(topic) })
			want := []string{"away 1", "away 2", "away 3"}
			for _, m := range want {
				if n, err := pub.Publish(ctx, topic, m).Result(); err != nil || n != 1 {
					t.Fatalf("PUBLISH while away: got %d, %v; want 1", n, err)
				}
			}
			ps = redistest.Subscribe(t, sc, topic)
			got := receive(t, ps, len(want), 10*time.Second)
			for i, m := range got {
				if m.Payload != want[i] {
					t.Errorf("message %d after reconnect: got %q, want %q", i, m.Payload, want[i])
				}
			}
			if err := pub.Publish(ctx, topic, "after").Err(); err != nil {
				t.Fatal(err)
			}
			if m := receive(t, ps, 1, 10*time.Second)[0]; m.Payload != "after" {
				t.Errorf("next message: got %q, want after (no repeat)", m.Payload)
			}
		})
	}
}

// TestSubscribeMany: several SUBSCRIBE commands on one connection (the
// FOGIS calendar sends five), several connections on one channel (each
// gets every event), and PSUBSCRIBE.
func TestSubscribeMany(t *testing.T) {
	f := start(t, fixtureOpts{})
	ctx := context.Background()
	base := newTopic(t, "many")
	chans := []string{base + ".v2", base + ".v1", base + ".updates", base + ".status", base + ".alerts"}
	pub := f.client(t, 3, "")

	t.Run("five SUBSCRIBE commands on one connection", func(t *testing.T) {
		ps := redistest.Subscribe(t, f.client(t, 2, ""), chans...)
		for _, ch := range chans {
			if err := pub.Publish(ctx, ch, "to "+ch).Err(); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]string{}
		for _, m := range receive(t, ps, len(chans), 10*time.Second) {
			got[m.Channel] = m.Payload
		}
		for _, ch := range chans {
			if got[ch] != "to "+ch {
				t.Errorf("channel %s: got %q, want %q", ch, got[ch], "to "+ch)
			}
		}
	})
	t.Run("two connections on one channel", func(t *testing.T) {
		topic := newTopic(t, "fanout")
		a := redistest.Subscribe(t, f.client(t, 3, ""), topic)
		b := redistest.Subscribe(t, f.client(t, 2, ""), topic)
		if err := pub.Publish(ctx, topic, "both").Err(); err != nil {
			t.Fatal(err)
		}
		for name, ps := range map[string]*redis.PubSub{"RESP3": a, "RESP2": b} {
			if m := receive(t, ps, 1, 10*time.Second)[0]; m.Payload != "both" {
				t.Errorf("%s subscriber: got %q, want both", name, m.Payload)
			}
		}
	})
	t.Run("psubscribe", func(t *testing.T) {
		old := newTopic(t, "pat")
		// A topic whose stream exists before the pattern: found by listing.
		if err := pub.Publish(ctx, old+".existing", "earlier").Err(); err != nil {
			t.Fatal(err)
		}
		for _, proto := range []int{3, 2} {
			c := f.client(t, proto, "")
			ps := c.PSubscribe(ctx, old+".*")
			if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if proto == 3 {
				if m := receive(t, ps, 1, 10*time.Second)[0]; m.Payload != "earlier" || m.Pattern != old+".*" || m.Channel != old+".existing" {
					t.Errorf("RESP3 pmessage: got %+v, want the earlier event on %s.existing", m, old)
				}
				if err := pub.Publish(ctx, old+".new", "later").Err(); err != nil {
					t.Fatal(err)
				}
				if m := receive(t, ps, 1, 10*time.Second)[0]; m.Payload != "later" || m.Channel != old+".new" {
					t.Errorf("RESP3 pmessage: got %+v, want the later event on %s.new", m, old)
				}
			} else {
				// The group delivered those already: a new one comes.
				if err := pub.Publish(ctx, old+".new", "last").Err(); err != nil {
					t.Fatal(err)
				}
				if m := receive(t, ps, 1, 10*time.Second)[0]; m.Payload != "last" || m.Pattern != old+".*" {
					t.Errorf("RESP2 pmessage: got %+v, want last", m)
				}
			}
			_ = ps.Close()
		}
	})
}

// feeding reports whether topic's feed runs or is still stopping.
func (h *hub) feeding(topic string) bool {
	h.mu.Lock()
	f := h.feeds[topic]
	h.mu.Unlock()
	if f == nil {
		return false
	}
	select {
	case <-f.done:
		return false
	default:
		return true
	}
}

// TestPingWhileSubscribed: go-redis's Pub/Sub health check (PING on the
// subscribed connection) gets the Pong it parses, in RESP2 and RESP3.
func TestPingWhileSubscribed(t *testing.T) {
	f := start(t, fixtureOpts{})
	ctx := context.Background()
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			ps := redistest.Subscribe(t, f.client(t, proto, ""), newTopic(t, "ping"))
			if err := ps.Ping(ctx, "check"); err != nil {
				t.Fatal(err)
			}
			msg, err := ps.ReceiveTimeout(ctx, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if p, ok := msg.(*redis.Pong); !ok || p.Payload != "check" {
				t.Errorf("got %#v, want Pong check", msg)
			}
		})
	}
}

// TestReserved: a topic a webhook subscription of this sidecar reads in
// the same group is refused to SUBSCRIBE and skipped by patterns.
func TestReserved(t *testing.T) {
	base := newTopic(t, "reserved")
	f := start(t, fixtureOpts{reserved: []string{base + ".hooked"}})
	ctx := context.Background()
	c := f.client(t, 3, "")
	ps := c.Subscribe(ctx)
	defer ps.Close()
	err := ps.Subscribe(ctx, base+".hooked")
	if err == nil {
		_, err = ps.ReceiveTimeout(ctx, 5*time.Second)
	}
	if err == nil || !strings.Contains(err.Error(), "delivered to a webhook by this sidecar's subscription") {
		t.Errorf("SUBSCRIBE to a reserved topic: got %v, want an error naming the conflict", err)
	}
	pat := subscribePattern(t, f.client(t, 3, ""), base+".*")
	pub := f.client(t, 3, "")
	for _, tp := range []string{base + ".hooked", base + ".free"} {
		if err := pub.Publish(ctx, tp, "to "+tp).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if m := receive(t, pat, 1, 10*time.Second)[0]; m.Channel != base+".free" {
		t.Errorf("pattern delivered %s, want only %s.free", m.Channel, base)
	}
	if n, err := f.rdb.XInfoGroups(ctx, "sidecar:{"+base+".hooked}").Result(); err != nil || len(n) != 0 {
		t.Errorf("groups on the reserved topic: got %v, %v; want none", n, err)
	}
}

func subscribePattern(t *testing.T, c *redis.Client, pattern string) *redis.PubSub {
	t.Helper()
	ctx := context.Background()
	ps := c.PSubscribe(ctx, pattern)
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.ReceiveTimeout(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return ps
}

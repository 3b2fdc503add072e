package test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// Retention must never trim what a consumer group has not acknowledged: a
// subscriber that is down while ten times max_len events are published
// gets every one of them, once and in order, when it comes back; then the
// stream is trimmed back towards max_len.
func TestRetentionNeverTrimsUnacknowledgedEntries(t *testing.T) {
	const (
		n      = 1000
		maxLen = 100
	)
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "retention")
	key := "sidecar:{" + topic + "}"
	rc := newReceiver(t)
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor",
		fmt.Sprintf("SIDECAR_RETENTION_MAX_LEN=%d", maxLen), "SIDECAR_RETENTION_INTERVAL=100ms")
	sub := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	rdb := redis.Client(t)
	ctx := context.Background()

	eventually.True(t, 10*time.Second, "the calendar group", func() bool {
		groups, err := rdb.XInfoGroups(ctx, key).Result()
		return err == nil && len(groups) == 1 && groups[0].Name == "calendar"
	})
	sub.kill()

	sent := make([]string, 0, n)
	for i := range n {
		sent = append(sent, pub.mustPublish(topic, body(i)).ID)
	}
	lenPublished := rdb.XLen(ctx, key).Val()
	// The publisher's retention has run against the stopped group and says
	// so: held back, by which group (status and metric).
	eventually.True(t, 10*time.Second, "/v1/status: retention held back by calendar", func() bool {
		_, b := getBody(t, pub.url("/v1/status"), "")
		var st struct {
			Retention []struct {
				HeldBy      string `json:"held_by"`
				HeldBack    bool   `json:"held_back"`
				HeldEntries int64  `json:"held_entries"`
			} `json:"retention"`
		}
		if json.Unmarshal([]byte(b), &st) != nil {
			return false
		}
		for _, r := range st.Retention {
			if r.HeldBack && r.HeldBy == "calendar" && r.HeldEntries >= n-2*maxLen {
				return true
			}
		}
		return false
	})
	if _, m := getBody(t, pub.url("/metrics"), ""); !strings.Contains(m, `sidecar_retention_held_entries{group="calendar",topic="`+topic+`"}`) {
		t.Fatalf("/metrics lacks sidecar_retention_held_entries for the calendar group")
	}
	lenHeld := rdb.XLen(ctx, key).Val()

	sub.restart()
	eventually.True(t, 60*time.Second, "the calendar group to consume all the stream holds", func() bool {
		return caughtUp(ctx, rdb, key, "calendar")
	})
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show
	got := ids(rc.all())
	seen := make(map[string]bool, len(got))
	for _, id := range got {
		seen[id] = true
	}
	lost := 0
	for _, id := range sent {
		if !seen[id] {
			lost++
		}
	}
	t.Logf("measured: %d events published while the subscriber was stopped (max_len %d); stream length %d after publishing, %d once %s; %d delivered after restart (%d distinct), lost %d",
		n, maxLen, lenPublished, lenHeld, "retention held back", len(got), len(seen), lost)
	if lost > 0 {
		t.Fatalf("retention trimmed %d of %d events the calendar group had not read; want 0 lost", lost, n)
	}
	exactlyOnceInOrder(t, rc, sent)

	// Acknowledged now by the only group: retention applies again.
	eventually.True(t, 30*time.Second, "the stream trimmed back to about max_len", func() bool {
		return rdb.XLen(ctx, key).Val() <= 2*maxLen
	})
	t.Logf("measured: stream length %d once the group had caught up", rdb.XLen(ctx, key).Val())
}

// caughtUp reports whether group has read the stream's last entry and has
// nothing pending.
func caughtUp(ctx context.Context, rdb *goredis.Client, key, group string) bool {
	last, err := rdb.XRevRangeN(ctx, key, "+", "-", 1).Result()
	if err != nil || len(last) == 0 {
		return false
	}
	groups, err := rdb.XInfoGroups(ctx, key).Result()
	if err != nil {
		return false
	}
	for _, g := range groups {
		if g.Name == group {
			return g.LastDeliveredID == last[0].ID && g.Pending == 0
		}
	}
	return false
}

package health

import (
	"context"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
	"github.com/fogis-sidecar/sidecar/internal/stream"
)

// TestStatusShowsPausedGroup: /v1/status says when an operator paused a
// subscription's group, and when it was resumed.
func TestStatusShowsPausedGroup(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	topic := redistest.UniqueTopic(t, "status-paused")
	ctx := context.Background()
	if err := rdb.XGroupCreateMkStream(ctx, stream.Key(topic), "calendar", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if st := ReadConsumer(ctx, rdb, topic, "calendar"); st.Paused || st.Error != "" {
		t.Fatalf("before the pause: got paused %v error %q, want false, none", st.Paused, st.Error)
	}
	if err := stream.Pause(ctx, rdb, topic, "calendar", stream.PauseInfo{By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if st := ReadConsumer(ctx, rdb, topic, "calendar"); !st.Paused {
		t.Fatal("paused group: got paused false, want true")
	}
	if _, err := stream.Resume(ctx, rdb, topic, "calendar"); err != nil {
		t.Fatal(err)
	}
	if st := ReadConsumer(ctx, rdb, topic, "calendar"); st.Paused {
		t.Fatal("resumed group: got paused true, want false")
	}
}

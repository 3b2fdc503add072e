package test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// TestMalformedCloudEventIsRefusedNotWritten: a structured CloudEvent whose
// attributes cannot become delivery headers (a CR LF in source, a control
// character in subject, a datacontenttype that is no media type) used to be
// answered 202, then failed every webhook attempt and held the topic. Each
// is refused with 400 malformed_cloudevent and nothing reaches the stream;
// a valid event after them is published and delivered.
func TestMalformedCloudEventIsRefusedNotWritten(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "validate")
	rc := newReceiver(t)
	sub := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	rdb := redis.Client(t)
	ctx := context.Background()
	streamKey := "sidecar:{" + topic + "}"
	const ce = "application/cloudevents+json"

	refused := 0
	for _, tc := range []struct {
		name, body string
	}{
		{"CR LF in source", `{"specversion":"1.0","id":"bad-1","type":"match_updates","source":"processor\r\nX-Injected: 1","data":{"m":1}}`},
		{"control character in subject", `{"specversion":"1.0","id":"bad-2","type":"match_updates","subject":"match/\u0001","data":{"m":2}}`},
		{"DEL in subject", `{"specversion":"1.0","id":"bad-3","type":"match_updates","subject":"match\u007f","data":{"m":3}}`},
		{"bad datacontenttype", `{"specversion":"1.0","id":"bad-4","type":"match_updates","datacontenttype":"not a media type","data":"x"}`},
		{"newline in type", `{"specversion":"1.0","id":"bad-5","type":"match\nupdates","data":{"m":5}}`},
		{"specversion 2.0", `{"specversion":"2.0","id":"bad-6","type":"match_updates","data":{"m":6}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, r := sub.publish(topic, []byte(tc.body), "Content-Type", ce)
			if code != http.StatusBadRequest || r.Code != "malformed_cloudevent" || r.Error == "" {
				t.Fatalf("publish: got %d %+v, want 400 malformed_cloudevent with a message", code, r)
			}
			if n := rdb.XLen(ctx, streamKey).Val(); n != 0 {
				t.Fatalf("XLEN %s: got %d, want 0 (a refused event is not written)", streamKey, n)
			}
			refused++
			t.Logf("refused: %s", r.Error)
		})
	}

	lenAfterRefused := rdb.XLen(ctx, streamKey).Val()
	good := sub.mustPublish(topic, []byte(`{"specversion":"1.0","id":"good-1","type":"match_updates","source":"match-list-processor","subject":"match/7","datacontenttype":"application/json; charset=utf-8","data":{"m":7}}`),
		"Content-Type", ce)
	if good.ID != "good-1" {
		t.Fatalf("receipt id: got %q, want good-1", good.ID)
	}
	var d received
	eventually.True(t, 10*time.Second, "the valid event delivered", func() bool {
		for _, r := range rc.all() {
			if r.Header.Get("ce-id") == "good-1" {
				d = r
				return true
			}
		}
		return false
	})
	h := d.Header
	for name, want := range map[string]string{
		"ce-id": "good-1", "ce-source": "match-list-processor", "ce-subject": "match/7", "ce-type": "match_updates",
		"Content-Type": "application/json; charset=utf-8",
	} {
		if v := h.Get(name); v != want {
			t.Errorf("delivery header %s: got %q, want %q", name, v, want)
		}
	}
	if string(d.Body) != `{"m":7}` {
		t.Errorf("delivery body: got %q, want {\"m\":7}", d.Body)
	}
	if got := ids(rc.all()); len(got) != 1 {
		t.Errorf("webhook requests: got %v, want only good-1", got)
	}
	eventually.True(t, 5*time.Second, "nothing pending", func() bool {
		return rdb.XPending(ctx, streamKey, "calendar").Val().Count == 0
	})
	if n := rdb.XLen(ctx, streamKey).Val(); n != 1 {
		t.Errorf("XLEN: got %d, want 1 (only the valid event)", n)
	}
	t.Logf("measured: %d malformed CloudEvents refused with 400 malformed_cloudevent, stream length %d after them; the valid one delivered (%d webhook request in all, ce-id %s)",
		refused, lenAfterRefused, rc.count(), h.Get("ce-id"))
}

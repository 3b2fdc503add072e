package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// TestEndToEndMetricIgnoresPublisherClock: sidecar_end_to_end_seconds
// measures from the entry's arrival in the stream, so an event time a
// publisher set years ahead (or behind) neither drives the histogram's
// _sum negative — which broke rate() — nor adds decades to it.
func TestEndToEndMetricIgnoresPublisherClock(t *testing.T) {
	redis := redistest.Start(t)
	var delivered atomic.Int64
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		delivered.Add(1)
	}))
	defer recv.Close()
	topic := redistest.UniqueTopic(t, "e2e-metric")
	listen := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs syncBuffer
	go func() {
		done <- run(ctx, []string{"--service", "calendar", "--listen", listen, "--spool-dir", t.TempDir(),
			"--redis-url", redis.URL, "--subscribe", topic + "=" + recv.URL + "/hook"}, noEnv, io.Discard, &logs)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("run did not return within 15s of cancel")
		}
	}()
	eventually.True(t, 10*time.Second, "/readyz 200", func() bool {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	for i, ts := range []string{"2099-01-01T00:00:00Z", "2001-01-01T00:00:00Z"} {
		ce := fmt.Sprintf(`{"specversion":"1.0","id":"skew-%d","source":"/publisher","type":"t","time":%q,"data":{"i":%d}}`, i, ts, i)
		resp, err := http.Post("http://"+listen+"/v1/publish/"+topic, "application/cloudevents+json", strings.NewReader(ce))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("publish with time %s: got %d, want 202", ts, resp.StatusCode)
		}
	}
	eventually.True(t, 10*time.Second, "2 deliveries", func() bool { return delivered.Load() >= 2 })
	var sum, count, skew float64
	eventually.True(t, 5*time.Second, "2 end-to-end observations", func() bool {
		exposition := scrape(t, "http://"+listen+"/metrics")
		sum = sample(exposition, "sidecar_end_to_end_seconds_sum", topic)
		count = sample(exposition, "sidecar_end_to_end_seconds_count", topic)
		skew = sample(exposition, "sidecar_event_time_skew_total", topic)
		return count == 2
	})
	if sum < 0 || sum > 10 {
		t.Fatalf("sidecar_end_to_end_seconds_sum: got %g, want between 0 and 10 (two loopback deliveries)", sum)
	}
	if skew > 0 {
		t.Errorf("sidecar_event_time_skew_total: got %g, want 0 (Redis and this host share a clock)", skew)
	}
	t.Logf("measured: end-to-end sum %.4fs over %g deliveries of events timed 2099 and 2001", sum, count)
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// sample is the value of metric's series for topic in a Prometheus text
// exposition, or -1 when there is none.
func sample(exposition, metric, topic string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + `\{[^}]*topic="` + regexp.QuoteMeta(topic) + `"[^}]*\} (\S+)$`)
	m := re.FindStringSubmatch(exposition)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/console/browsertest"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// adminCall sends an admin API request with the token and decodes the
// 2xx JSON answer into out (may be nil).
func adminCall(t *testing.T, s *sidecar, token, method, path, body string, out any) {
	t.Helper()
	req, _ := http.NewRequest(method, s.url(path), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: got %d %s, want 2xx", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, path, err, raw)
		}
	}
}

type dlqListing struct {
	Entries []struct {
		DLQID string `json:"dlq_id"`
		ID    string `json:"id"`
		Group string `json:"group"`
	} `json:"entries"`
}

// TestConsoleRedrivesDeadLetter: the real binary with Redis, a receiver
// and api_token set. An event dead-letters; the console in headless
// Chromium asks for the token, shows the subscription's lag as the admin
// API reports it, and a click on the dead letter's Redrive button delivers
// it to the receiver again: same webhook-id, Sidecar-Redrive: true.
func TestConsoleRedrivesDeadLetter(t *testing.T) {
	b := browsertest.Start(t)
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "console")
	rc := newReceiver(t)
	var healed atomic.Bool
	rc.set(0, func(received, int) int {
		if healed.Load() {
			return http.StatusOK
		}
		return http.StatusInternalServerError
	})
	const token = "console-e2e-token"
	sc := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_API_TOKEN="+token,
		"SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	auth := []string{"Authorization", "Bearer " + token}

	// An event the receiver refuses max_attempts (3) times: a dead letter.
	dead := sc.mustPublish(topic, []byte(`{"matchid":6140017,"changed":["referees"]}`), auth...)
	var dlqID string
	eventually.True(t, 20*time.Second, "the event in the DLQ", func() bool {
		var l dlqListing
		adminCall(t, sc, token, http.MethodGet, "/v1/topics/"+topic+"/dlq?group=calendar", "", &l)
		for _, e := range l.Entries {
			if e.ID == dead.ID && e.Group == "calendar" {
				dlqID = e.DLQID
			}
		}
		return dlqID != ""
	})
	attempts := len(rc.all())
	healed.Store(true)

	// A lag to read: pause the group, publish two.
	adminCall(t, sc, token, http.MethodPost, "/v1/subscriptions/"+topic+"/calendar/pause", "", nil)
	sc.mustPublish(topic, []byte(`{"n":1}`), auth...)
	sc.mustPublish(topic, []byte(`{"n":2}`), auth...)

	p := b.Open(t, sc.url("/"))
	p.Timeout = 20 * time.Second // /v1/status refreshes every 5 s
	p.WaitJS("the token form", `document.getElementById('token-dialog').open`)
	p.TypeInto("token-input", token)
	p.Click("token-submit")

	id := topic + "-calendar"
	p.WaitText("lag-"+id, "2")
	p.WaitText("state-"+id, "paused")
	var topics struct {
		Topics []struct {
			Topic  string `json:"topic"`
			Groups []struct {
				Group string `json:"group"`
				Lag   int64  `json:"lag"`
			} `json:"groups"`
		} `json:"topics"`
	}
	adminCall(t, sc, token, http.MethodGet, "/v1/topics", "", &topics)
	apiLag := int64(-2)
	for _, tp := range topics.Topics {
		for _, g := range tp.Groups {
			if tp.Topic == topic && g.Group == "calendar" {
				apiLag = g.Lag
			}
		}
	}
	if got := p.Text("lag-" + id); got != fmt.Sprint(apiLag) {
		t.Errorf("lag in the console %q, in GET /v1/topics %d: want the same", got, apiLag)
	}

	// Resume from the console: the two paused events arrive.
	p.Click("resume-" + id)
	eventually.True(t, 15*time.Second, "the two events after resume", func() bool { return rc.count() >= attempts+2 })
	p.WaitText("lag-"+id, "0")

	// Redrive the dead letter from the console.
	p.WaitPresent("redrive-" + dlqID)
	clicked := time.Now()
	p.Click("redrive-" + dlqID)
	var again received
	eventually.True(t, 15*time.Second, "the dead letter delivered again", func() bool {
		for _, r := range rc.all()[attempts:] {
			if r.Header.Get("webhook-id") == dead.ID {
				again = r
				return true
			}
		}
		return false
	})
	t.Logf("redrive: click to delivery in %v", again.At.Sub(clicked).Round(time.Millisecond))
	if got := again.Header.Get("Sidecar-Redrive"); got != "true" {
		t.Errorf("Sidecar-Redrive: got %q, want true", got)
	}
	if string(again.Body) != `{"matchid":6140017,"changed":["referees"]}` {
		t.Errorf("redriven body: got %s, want the original event's", again.Body)
	}
	p.WaitToast("Redriven to calendar")
	p.WaitGone("dead-" + dlqID)
	var l dlqListing
	adminCall(t, sc, token, http.MethodGet, "/v1/topics/"+topic+"/dlq?group=calendar", "", &l)
	if len(l.Entries) != 0 {
		t.Errorf("DLQ after the redrive: got %d entries, want 0", len(l.Entries))
	}
	// Exactly once more: the three refused attempts, two new events, one redrive.
	eventually.True(t, 5*time.Second, "the redrive acknowledged", func() bool {
		var topics struct {
			Topics []struct {
				Topic  string `json:"topic"`
				Groups []struct {
					Group   string `json:"group"`
					Pending int64  `json:"pending"`
				} `json:"groups"`
			} `json:"topics"`
		}
		adminCall(t, sc, token, http.MethodGet, "/v1/topics", "", &topics)
		for _, tp := range topics.Topics {
			for _, g := range tp.Groups {
				if tp.Topic == topic && g.Group == "calendar" {
					return g.Pending == 0
				}
			}
		}
		return false
	})
	n := 0
	for _, r := range rc.all() {
		if r.Header.Get("webhook-id") == dead.ID {
			n++
		}
	}
	if n != attempts+1 {
		t.Errorf("deliveries of the dead letter: got %d, want %d (the refused attempts and one redrive)", n, attempts+1)
	}
}

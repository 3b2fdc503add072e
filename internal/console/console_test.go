package console

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fogis-sidecar/sidecar/internal/console/browsertest"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
)

const matches = "fogis:matches:updates"

// waitRequest waits until the fake received n requests with method and
// path, and returns them.
func waitRequest(t *testing.T, f *fakeAPI, n int, method, path string) []apiRequest {
	t.Helper()
	eventually.True(t, 10*time.Second, fmt.Sprintf("%d× %s %s", n, method, path), func() bool { return len(f.requestsTo(method, path)) >= n })
	return f.requestsTo(method, path)
}

// TestConsoleInChromium drives the console in headless Chromium against a
// fake of the admin API and /v1/status.
func TestConsoleInChromium(t *testing.T) {
	b := browsertest.Start(t)

	t.Run("shows Redis, spool and a subscription's lag", func(t *testing.T) {
		f := newFakeAPI(t, "")
		f.realistic()
		f.setReady("degraded", "subscription fogis:calendar:sync/calendar-sync not running")
		p := b.Open(t, f.server.URL+"/")
		p.WaitText("lag-"+matches+"-notifier", "12,345")
		lag, err := strconv.Atoi(strings.ReplaceAll(p.Text("lag-"+matches+"-notifier"), ",", ""))
		if err != nil || lag != 12345 {
			t.Errorf("notifier lag in the DOM: got %d (%v), want 12345", lag, err)
		}
		for id, want := range map[string]string{
			"lag-" + matches + "-calendar":            "0",
			"pending-" + matches + "-notifier":        "3oldest 4.2 s",
			"delivered-" + matches + "-calendar":      "48,213",
			"redis-up":                                "up",
			"redis-version":                           "7.4.2",
			"redis-memory":                            "38.0 MiB of 256 MiB",
			"redis-policy":                            "noeviction",
			"redis-persistence":                       "AOF",
			"spool-bytes":                             "1.2 MiB of 1.0 GiB",
			"spool-events":                            "3",
			"spool-spooled":                           "1,520",
			"service":                                 "match-list-processor",
			"uptime":                                  "3 h 25 min",
			"subs-running":                            "3 of 3 running",
			"dead-total":                              "4",
			"topic-dlq-fogis:calendar:sync":           "1",
			"dlq-" + matches + "-notifier":            "2", // the group's own, not the topic's 3
			"group-dlq-" + matches + "-calendar":      "1",
			"length-" + matches:                       "18",
			"error-" + matches + "-notifier":          "POST http://notifier:8080/events: 503 Service Unavailable",
			"reasons":                                 "subscription fogis:calendar:sync/calendar-sync not running",
			"topic-name":                              matches, // the topic with the most dead letters is shown
			"group-lag-" + matches + "-notifier":      "12,345",
			"overall-state":                           "Degraded",
			"failed-" + matches + "-notifier":         "2412 retried",
			"state-fogis:calendar:sync-calendar-sync": "running",
		} {
			p.WaitText(id, want)
		}
		if got := p.Eval(fmt.Sprintf(`document.querySelector(%q).dataset.state`, browsertest.Sel("overall-state"))); got != "degraded" {
			t.Errorf("overall state: got %q, want degraded (from /readyz)", got)
		}
		// Recent events: newest first, data previewed, expandable.
		rows := p.WaitJS("20 event rows", `(() => { const n = document.querySelectorAll('[data-testid^="event-"]').length; return n === 18 ? n : 0 })()`)
		if rows != "18" {
			t.Errorf("event rows: got %s, want 18", rows)
		}
		first := p.Eval(`document.querySelector('#events-body tr').dataset.testid`)
		f.mu.Lock()
		newest := f.topic(matches).events[17]
		f.mu.Unlock()
		if first != "event-"+newest.StreamID {
			t.Errorf("first event row: got %s, want the newest, event-%s", first, newest.StreamID)
		}
		if got := p.Text("preview-" + newest.StreamID); !strings.HasPrefix(got, `{"matchid":6140289`) {
			t.Errorf("preview: got %q, want the event's data", got)
		}
		p.Click("expand-" + newest.StreamID)
		detail := p.WaitJS("the event's details", browsertest.TextJS("detail-"+newest.StreamID))
		for _, want := range []string{newest.ID, "se.fogis.match.updated", newest.Traceparent, "\"arena\": \"Gamla Ullevi\""} {
			if !strings.Contains(detail, want) {
				t.Errorf("details: got %q, want it to contain %q (pretty-printed JSON)", detail, want)
			}
		}
		// The status polls carried no token: none is configured.
		for _, r := range f.allRequests() {
			if r.Auth != "" {
				t.Errorf("%s %s sent Authorization %q with no token set", r.Method, r.Path, r.Auth)
			}
		}
	})

	t.Run("redrive one dead letter", func(t *testing.T) {
		f := newFakeAPI(t, "")
		dead := f.realistic()
		target := dead[1] // notifier's second dead letter
		p := b.Open(t, f.server.URL+"/console/")
		p.WaitText("topic-name", matches)
		p.WaitJS("its redrive button", fmt.Sprintf(`document.querySelector(%q)`, browsertest.Sel("redrive-"+target.DLQID)))
		p.Click("redrive-" + target.DLQID)
		reqs := waitRequest(t, f, 1, "POST", "/v1/topics/"+matches+"/dlq/redrive")
		var body struct {
			Group string   `json:"group"`
			IDs   []string `json:"ids"`
		}
		if err := json.Unmarshal([]byte(reqs[0].Body), &body); err != nil {
			t.Fatalf("redrive body %q: %v", reqs[0].Body, err)
		}
		if body.Group != "notifier" || len(body.IDs) != 1 || body.IDs[0] != target.DLQID {
			t.Errorf("redrive body: got %+v, want group notifier and ids [%s]", body, target.DLQID)
		}
		p.WaitToast("Redriven to notifier")
		p.WaitGone("dead-" + target.DLQID)
		for _, other := range []fakeEvent{dead[0], dead[2]} {
			if p.Eval(fmt.Sprintf(`String(!!document.querySelector(%q))`, browsertest.Sel("dead-"+other.DLQID))) != "true" {
				t.Errorf("dead letter %s vanished too; only %s was redriven", other.DLQID, target.DLQID)
			}
		}
		if n := len(f.requestsTo("POST", "/v1/topics/"+matches+"/dlq/redrive")); n != 1 {
			t.Errorf("redrive requests: got %d, want 1", n)
		}
	})

	t.Run("redrive all loops until none remain", func(t *testing.T) {
		f := newFakeAPI(t, "")
		f.realistic()
		f.mu.Lock()
		tp := f.topic(matches)
		f.mu.Unlock()
		for i := range 2345 {
			f.addDead(tp, "notifier", time.Duration(3000-i)*time.Second, "se.fogis.match.updated", `{}`, "503", 8)
		}
		p := b.Open(t, f.server.URL+"/")
		p.WaitText("topic-name", matches)
		p.Choose("dlq-group", "notifier")
		p.WaitText("dlq-more", "Showing the oldest 100 of notifier's dead letters.")
		p.Click("redrive-all")
		p.WaitJS("the confirmation", `document.getElementById('confirm-dialog').open`)
		p.Click("confirm-ok")
		p.WaitToast("Redriven 2,347 dead letters.")
		reqs := f.requestsTo("POST", "/v1/topics/"+matches+"/dlq/redrive")
		if len(reqs) != 3 {
			t.Fatalf("redrive calls: got %d, want 3 (1000 + 1000 + 347, looping while remaining > 0)", len(reqs))
		}
		for _, r := range reqs {
			if r.Body != `{"group":"notifier","limit":1000}` {
				t.Errorf("redrive body: got %s, want {\"group\":\"notifier\",\"limit\":1000} (the chosen group, no ids)", r.Body)
			}
		}
		f.mu.Lock()
		left := len(f.deadOf(tp, "notifier"))
		other := len(f.deadOf(tp, "calendar"))
		f.mu.Unlock()
		if left != 0 || other != 1 {
			t.Errorf("dead letters left: notifier %d, calendar %d; want 0 and 1 (only the chosen group)", left, other)
		}
		p.WaitText("dlq-empty", "No dead letters. Nice.")
	})

	t.Run("purge asks first", func(t *testing.T) {
		f := newFakeAPI(t, "")
		dead := f.realistic()
		target := dead[2] // calendar's
		p := b.Open(t, f.server.URL+"/")
		p.WaitJS("its purge button", fmt.Sprintf(`document.querySelector(%q)`, browsertest.Sel("purge-"+target.DLQID)))
		p.Click("purge-" + target.DLQID)
		p.WaitJS("the confirmation", `document.getElementById('confirm-dialog').open`)
		p.Click("confirm-cancel")
		p.WaitJS("the dialog to close", `!document.getElementById('confirm-dialog').open`)
		p.Click("refresh-now") // a full refresh round trip after the cancel
		n := f.statusCalls()
		eventually.True(t, 5*time.Second, "another status poll", func() bool { return f.statusCalls() > n })
		if got := f.requestsTo("DELETE", "/v1/topics/"+matches+"/dlq"); len(got) != 0 {
			t.Fatalf("cancelled purge sent %d DELETEs", len(got))
		}
		p.Click("purge-" + target.DLQID)
		p.WaitJS("the confirmation", `document.getElementById('confirm-dialog').open`)
		p.Click("confirm-ok")
		reqs := waitRequest(t, f, 1, "DELETE", "/v1/topics/"+matches+"/dlq")
		if want := "group=calendar&ids=" + target.DLQID; reqs[0].Query != want {
			t.Errorf("purge query: got %q, want %q", reqs[0].Query, want)
		}
		p.WaitToast("Purged 1 dead letter.")
		p.WaitGone("dead-" + target.DLQID)
	})

	t.Run("pause, resume and seek", func(t *testing.T) {
		f := newFakeAPI(t, "")
		f.realistic()
		id := matches + "-calendar"
		p := b.Open(t, f.server.URL+"/")
		p.WaitText("state-"+id, "running")
		p.Click("pause-" + id)
		waitRequest(t, f, 1, "POST", "/v1/subscriptions/"+matches+"/calendar/pause")
		p.WaitText("state-"+id, "paused")
		p.WaitToast("is paused")
		p.Click("resume-" + id)
		waitRequest(t, f, 1, "POST", "/v1/subscriptions/"+matches+"/calendar/resume")
		p.WaitText("state-"+id, "running")

		p.Click("seek-" + id)
		p.WaitJS("the seek dialog", `document.getElementById('seek-dialog').open`)
		p.Click("seek-earliest")
		p.Click("seek-submit")
		reqs := waitRequest(t, f, 1, "POST", "/v1/subscriptions/"+matches+"/calendar/seek")
		if reqs[0].Body != `{"to":"earliest"}` {
			t.Errorf("seek body: got %s, want {\"to\":\"earliest\"}", reqs[0].Body)
		}
		p.WaitToast("now reads after 0-0")

		p.Click("group-seek-" + id)
		p.WaitJS("the seek dialog", `document.getElementById('seek-dialog').open`)
		p.Click("seek-id")
		p.TypeInto("seek-value", "1700000000000-0")
		p.Click("seek-submit")
		reqs = waitRequest(t, f, 2, "POST", "/v1/subscriptions/"+matches+"/calendar/seek")
		if reqs[1].Body != `{"to":"1700000000000-0"}` {
			t.Errorf("seek body: got %s, want {\"to\":\"1700000000000-0\"}", reqs[1].Body)
		}
		p.WaitToast("now reads after 1700000000000-0")
	})

	t.Run("asks for the token on 401 and keeps it in the tab", func(t *testing.T) {
		f := newFakeAPI(t, "s3cret")
		f.realistic()
		p := b.Open(t, f.server.URL+"/")
		p.WaitJS("the token form", `document.getElementById('token-dialog').open`)
		if got := p.Text("lag-" + matches + "-notifier"); got != "" {
			t.Errorf("lag shown without a token: %q", got)
		}
		p.TypeInto("token-input", "wrong")
		p.Click("token-submit")
		p.WaitText("token-error", "That token was refused.")
		p.TypeInto("token-input", "s3cret")
		p.Click("token-submit")
		p.WaitText("lag-"+matches+"-notifier", "12,345")
		if p.Eval(`String(document.getElementById('token-dialog').open)`) != "false" {
			t.Error("the token form stayed open after the right token")
		}
		if got := p.Eval(`sessionStorage.getItem('sidecar.apiToken')`); got != "s3cret" {
			t.Errorf("sessionStorage: got %q, want the token", got)
		}
		reqs := f.requestsTo("GET", "/v1/status")
		if reqs[0].Auth != "" || reqs[len(reqs)-1].Auth != "Bearer s3cret" {
			t.Errorf("Authorization: first %q, last %q; want none before the form, Bearer s3cret after", reqs[0].Auth, reqs[len(reqs)-1].Auth)
		}
		// A reload in the same tab keeps the token: no form.
		p.Do(chromedp.Reload())
		p.WaitText("lag-"+matches+"-notifier", "12,345")
		if p.Eval(`String(document.getElementById('token-dialog').open)`) != "false" {
			t.Error("the token form opened again after a reload in the same tab")
		}
		p.Click("forget-token")
		p.WaitJS("the token form again", `document.getElementById('token-dialog').open`)
		if got := p.Eval(`String(sessionStorage.getItem('sidecar.apiToken'))`); got != "null" {
			t.Errorf("sessionStorage after forget: got %q, want none", got)
		}
	})

	t.Run("shows the API's error in a toast", func(t *testing.T) {
		f := newFakeAPI(t, "")
		f.realistic()
		f.failWith("POST /v1/subscriptions/fogis:calendar:sync/calendar-sync/pause", 404, "no_such_group",
			`consumer group "calendar-sync" does not exist on topic "fogis:calendar:sync"`)
		p := b.Open(t, f.server.URL+"/")
		p.Click("pause-fogis:calendar:sync-calendar-sync")
		got := p.WaitToast(`consumer group "calendar-sync" does not exist`)
		if !strings.Contains(got, "no_such_group") || !strings.Contains(got, "404") {
			t.Errorf("toast: got %q, want the code no_such_group and the status 404", got)
		}
		p.WaitText("state-fogis:calendar:sync-calendar-sync", "running")
	})

	t.Run("event data is text, never markup", func(t *testing.T) {
		f := newFakeAPI(t, "")
		tp := f.addTopic("evil", &fakeGroup{Group: "g"})
		e := f.addEvent(tp, time.Second, `<img src=x onerror="window.pwned=1">`, "<b>s</b>", `<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>`)
		f.addDead(tp, "g", time.Second, "t", `<svg onload="window.pwned=3">`, `<img src=x onerror="window.pwned=4">`, 1)
		p := b.Open(t, f.server.URL+"/")
		p.WaitText("preview-"+e.StreamID, `<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>`)
		p.Click("expand-" + e.StreamID)
		p.WaitJS("the details", browsertest.TextJS("detail-"+e.StreamID))
		if got := p.Eval(`String(window.pwned)`); got != "undefined" {
			t.Errorf("window.pwned = %s: event data ran as markup", got)
		}
		if n := p.Eval(`String(document.querySelectorAll('main img, main script, main svg[onload], main b').length)`); n != "0" {
			t.Errorf("%s elements made from event data", n)
		}
	})

	t.Run("lag sparkline grows with each poll", func(t *testing.T) {
		f := newFakeAPI(t, "")
		f.realistic()
		f.setWobble(true)
		p := b.Open(t, f.server.URL+"/?interval=250")
		spark := browsertest.Sel("spark-" + matches + "-notifier")
		p.WaitJS("a sparkline of 4 samples", fmt.Sprintf(`Number(document.querySelector(%q)?.dataset.points) >= 4`, spark))
		pts := p.Eval(fmt.Sprintf(`document.querySelector(%q + ' polyline').getAttribute('points')`, spark))
		if n := len(strings.Fields(pts)); n < 4 {
			t.Errorf("polyline: got %d points (%q), want one per poll", n, pts)
		}
		ys := map[string]bool{}
		for _, pt := range strings.Fields(pts) {
			ys[pt[strings.Index(pt, ",")+1:]] = true
		}
		if len(ys) < 2 {
			t.Errorf("polyline %q is flat, though the lag changed between polls", pts)
		}
	})

	t.Run("buttons stay put while the numbers beside them change", func(t *testing.T) {
		f := newFakeAPI(t, "")
		f.realistic()
		f.setWobble(true)
		p := b.Open(t, f.server.URL+"/?interval=200")
		id := matches + "-notifier"
		p.WaitPresent("pause-" + id)
		p.Eval(fmt.Sprintf(`window.pauseButton = document.querySelector(%q); window.lagCell = document.querySelector(%q); ""`,
			browsertest.Sel("pause-"+id), browsertest.Sel("lag-"+id)))
		lag := p.Text("lag-" + id)
		p.WaitJS("the lag to change", fmt.Sprintf(`%s !== %q`, browsertest.TextJS("lag-"+id), lag))
		if p.Eval(`String(window.lagCell.isConnected)`) != "false" {
			t.Fatal("the lag cell was not redrawn, so this test proves nothing")
		}
		if p.Eval(`String(window.pauseButton.isConnected)`) != "true" {
			t.Error("the Pause button was rebuilt when the lag changed: a click landing then is lost")
		}
	})

	t.Run("stops polling while the tab is hidden", func(t *testing.T) {
		f := newFakeAPI(t, "")
		f.realistic()
		p := b.Open(t, f.server.URL+"/?interval=200")
		eventually.True(t, 5*time.Second, "3 status polls", func() bool { return f.statusCalls() >= 3 })
		p.Eval(`Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); document.dispatchEvent(new Event('visibilitychange')); ""`)
		p.WaitJS("the paused label", fmt.Sprintf(`%s.includes("paused while hidden")`, browsertest.TextJS("updated")))
		// At most one poll was in flight when the tab hid; then none for 5 intervals.
		before := f.statusCalls()
		deadline := time.Now().Add(time.Second)
		for time.Now().Before(deadline) {
			if n := f.statusCalls(); n > before+1 {
				t.Fatalf("hidden tab polled: %d status calls after hiding, want at most 1", n-before)
			}
			time.Sleep(20 * time.Millisecond)
		}
		p.Eval(`Object.defineProperty(document, 'hidden', {configurable: true, get: () => false}); document.dispatchEvent(new Event('visibilitychange')); ""`)
		n := f.statusCalls()
		eventually.True(t, 5*time.Second, "polling to resume when visible", func() bool { return f.statusCalls() >= n+2 })
	})
}

// TestWriteScreenshot regenerates the README's screenshot:
//
//	SIDECAR_WRITE_SCREENSHOT=../../docs/console.png go test -run TestWriteScreenshot ./internal/console/
func TestWriteScreenshot(t *testing.T) {
	out := os.Getenv("SIDECAR_WRITE_SCREENSHOT")
	if out == "" {
		t.Skip("set SIDECAR_WRITE_SCREENSHOT=<path.png> to write the console's screenshot")
	}
	b := browsertest.Start(t)
	f := newFakeAPI(t, "")
	f.realistic()
	f.setWobble(true)
	p := b.Open(t, f.server.URL+"/?interval=200")
	p.WaitJS("a sparkline of 24 samples", fmt.Sprintf(`Number(document.querySelector(%q)?.dataset.points) >= 24`, browsertest.Sel("spark-"+matches+"-notifier")))
	f.freezeWobble()
	n := f.statusCalls()
	eventually.True(t, 5*time.Second, "two polls of the frozen lag", func() bool { return f.statusCalls() >= n+2 })
	f.mu.Lock()
	newest := f.topic(matches).events[17]
	f.mu.Unlock()
	p.Click("expand-" + newest.StreamID)
	p.WaitJS("the details", browsertest.TextJS("detail-"+newest.StreamID))
	p.WaitJS("the subscription and group lag to agree", fmt.Sprintf(`%s === %s`, browsertest.TextJS("lag-"+matches+"-notifier"), browsertest.TextJS("group-lag-"+matches+"-notifier")))
	png, err := p.Capture()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d bytes)", out, len(png))
}

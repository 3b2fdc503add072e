package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/config"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// The issue "No silent loss": a 202 is a promise, also across a Redis
// failover. These tests publish under load through a Sentinel-managed
// Redis, fail the master over mid-way, and count every acknowledged event
// that never reaches the subscriber.

func TestSentinelPlannedFailoverLosesNoAcknowledgedEvent(t *testing.T) {
	sentinelLossUnderFault(t, "planned", func(s *redistest.Sentinel) string {
		from, to := s.Failover()
		return fmt.Sprintf("SENTINEL FAILOVER %s -> %s", from, to)
	})
}

func TestSentinelMasterKilledLosesNoAcknowledgedEvent(t *testing.T) {
	sentinelLossUnderFault(t, "sigkill", func(s *redistest.Sentinel) string {
		start := time.Now()
		killed, promoted := s.KillMaster()
		took := time.Since(start)
		s.RestartOld() // the set has a replica again for the rest of the run
		return fmt.Sprintf("SIGKILL of master %s, %s promoted after %v, old master back as replica",
			killed, promoted, took.Round(time.Millisecond))
	})
}

// sentinelLossUnderFault publishes 3,000 numbered events at about 200/s
// from four clients through a Sentinel URL and runs fault once half are
// sent. Two groups must each get every acknowledged event: "calendar",
// subscribed throughout, and "audit", subscribed only once the old master
// has rejoined as a replica — a group that reads the stream later (a
// service that was down, a new one) sees only what the stream kept, not
// what a subscriber happened to read from the old master before it was
// demoted and discarded its writes.
func sentinelLossUnderFault(t *testing.T, prefix string, fault func(*redistest.Sentinel) string) {
	const (
		events  = 3000
		rate    = 200 // per second, all clients together
		clients = 4
		drain   = 20 * time.Second // after the last publish, for both groups
	)
	s := redistest.StartSentinel(t)
	topic := redistest.UniqueTopic(t, prefix)
	live, late := newReceiver(t), newReceiver(t)
	startSidecar(t, "calendar", "REDIS_URL="+s.URL, "SIDECAR_CONFIG="+patientSubscriberConfig(t, "calendar", live.url(), topic))
	pub := startSidecar(t, "processor", "REDIS_URL="+s.URL, "SIDECAR_SERVICE=processor")
	requireDirectPublish(t, pub, topic)

	start := time.Now()
	load := startPacedLoad(pub, topic, rate, clients, 0, events)
	eventually.True(t, 30*time.Second, "half the events sent", func() bool { return load.sent() >= events/2 })
	faultAt := time.Now()
	what := fault(s)
	t.Logf("fault %v into the load: %s (took %v)", faultAt.Sub(start).Round(time.Millisecond), what, time.Since(faultAt).Round(time.Millisecond))
	load.wait()
	loadEnd := time.Now()
	s.WaitSettled() // after a planned failover: the old master is a replica again
	t.Logf("replication settled %v after the fault", time.Since(faultAt).Round(time.Millisecond))
	startSidecar(t, "audit", "REDIS_URL="+s.URL, "SIDECAR_CONFIG="+patientSubscriberConfig(t, "audit", late.url(), topic))
	auditStart := time.Now()

	outs := load.outcomes()
	waitAcknowledgedDelivered(live, outs, time.Until(loadEnd.Add(drain)))
	// The audit group starts reading only now (a planned failover settles
	// ~20 s after the fault): it gets its own drain window for the backlog.
	waitAcknowledgedDelivered(late, outs, time.Until(auditStart.Add(drain)))
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show
	inStream := streamEventIDs(t, s.Client(t), topic)
	secs := time.Since(start).Seconds()
	fl, fa := tallyLoss(outs, live, inStream), tallyLoss(outs, late, inStream)
	fl.log(t, "group calendar, subscribed throughout", secs)
	fa.log(t, "group audit, subscribed once replication settled", secs)
	fl.checkStream(t)
	fl.check(t, "calendar")
	fa.check(t, "audit")
}

// patientSubscriberConfig subscribes service to topics with a retry
// horizon no fault in these tests can exhaust.
func patientSubscriberConfig(t *testing.T, service, url string, topics ...string) string {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "service: %s\nsubscriptions:\n", service)
	for _, topic := range topics {
		fmt.Fprintf(&b, `  - topic: %s
    url: %s
    start: earliest
    max_attempts: 1000000
    retry_for: 10m
    backoff: {initial: 20ms, max: 200ms}
`, topic, url)
	}
	return writeConfig(t, b.String())
}

// requireDirectPublish waits until a publish to topic lands in the stream
// (not the spool): the fault must hit a sidecar that was writing to Redis.
func requireDirectPublish(t *testing.T, pub *sidecar, topic string) {
	t.Helper()
	var last pacedOutcome
	ok := false
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		// Not acknowledged as part of the load: a probe the tally ignores,
		// sent with an unnumbered body.
		if last = publishNoFatal(pub, topic, []byte(`{"probe":true}`)); last.direct() {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatalf("no direct publish to %s within 15s; last answer %d %+v %v", topic, last.code, last.r, last.err)
	}
}

// pacedOutcome is one publish's answer.
type pacedOutcome struct {
	seq        int
	topic      string
	sent, done time.Time
	code       int
	r          receipt
	err        error // transport error: the sidecar did not answer
}

// acked: the sidecar promised the event (2xx with an id).
func (o pacedOutcome) acked() bool { return o.err == nil && o.code/100 == 2 && o.r.ID != "" }

// direct: acknowledged with a stream id, not through the spool.
func (o pacedOutcome) direct() bool { return o.acked() && o.r.StreamID != "" && !o.r.Spooled }

// publishClient answers within the sidecar's publish timeout plus a spool
// write; the bound only keeps a hung sidecar from hanging the test.
var publishClient = &http.Client{Timeout: 10 * time.Second}

// publishNoFatal publishes body and returns the answer; unlike
// sidecar.publish it may run on any goroutine.
func publishNoFatal(s *sidecar, topic string, body []byte) pacedOutcome {
	o := pacedOutcome{topic: topic, sent: time.Now()}
	req, err := http.NewRequest(http.MethodPost, s.url("/v1/publish/"+topic), bytes.NewReader(body))
	if err != nil {
		o.err, o.done = err, time.Now()
		return o
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := publishClient.Do(req)
	if err != nil {
		o.err, o.done = err, time.Now()
		return o
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	o.code = resp.StatusCode
	if err := json.Unmarshal(raw, &o.r); err != nil && o.code/100 == 2 {
		o.err = fmt.Errorf("2xx with a non-JSON body %q", raw)
	}
	o.done = time.Now()
	return o
}

// pacedLoad publishes numbered events (body(seq)) to one topic at a steady
// rate from several clients, recording every answer.
type pacedLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	outs   []pacedOutcome
	n      int
}

// startPacedLoad sends events (0: until stop) numbered from first, at rate
// per second in all. A tick is dropped while every client waits on a slow
// answer, so a stall lowers the rate instead of bunching requests afterwards.
func startPacedLoad(pub *sidecar, topic string, rate, clients, first, events int) *pacedLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &pacedLoad{cancel: cancel}
	seqs := make(chan int)
	l.wg.Go(func() {
		defer close(seqs)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for seq := first; events == 0 || seq < first+events; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			select {
			case <-ctx.Done():
				return
			case seqs <- seq:
			}
		}
	})
	for range clients {
		l.wg.Go(func() {
			for seq := range seqs {
				o := publishNoFatal(pub, topic, body(seq))
				o.seq = seq
				l.mu.Lock()
				l.outs = append(l.outs, o)
				l.n++
				l.mu.Unlock()
			}
		})
	}
	return l
}

// sent is how many publishes have been answered.
func (l *pacedLoad) sent() int { l.mu.Lock(); defer l.mu.Unlock(); return l.n }

// wait waits until every event has been published.
func (l *pacedLoad) wait() { l.wg.Wait() }

// stop ends the load and waits for the publishes in flight.
func (l *pacedLoad) stop() { l.cancel(); l.wg.Wait() }

// outcomes is a copy of the answers so far.
func (l *pacedLoad) outcomes() []pacedOutcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.outs)
}

// waitAcknowledgedDelivered waits until every acknowledged event has
// reached the receiver, or d passes: what has not by then counts as lost.
func waitAcknowledgedDelivered(rc *receiver, outs []pacedOutcome, d time.Duration) {
	want := map[string]bool{}
	for _, o := range outs {
		if o.acked() {
			want[o.r.ID] = true
		}
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got := map[string]bool{}
		for _, id := range ids(rc.all()) {
			if want[id] {
				got[id] = true
			}
		}
		if len(got) == len(want) {
			return
		}
	}
}

// lossFigures is the account of one run, as one group saw it.
type lossFigures struct {
	acked, direct, spooled int
	non2xx, transportErrs  int
	delivered              int      // distinct acknowledged events the group's webhook got
	lost                   []string // acknowledged, never delivered
	duplicated             int      // deliveries beyond the first of an event
	unacked                int      // delivered events whose publish was not acknowledged (allowed)
	mismatched             int      // deliveries whose body is not the published one
	missing                int      // acknowledged events not in the stream at the end
	streamDuplicates       int      // stream entries repeating an event id
}

// tallyLoss accounts the publishes outs against what rc received and the
// event ids found in the streams at the end.
func tallyLoss(outs []pacedOutcome, rc *receiver, inStream []string) lossFigures {
	var f lossFigures
	seqOf := map[string]int{}
	for _, o := range outs {
		switch {
		case o.err != nil:
			f.transportErrs++
		case o.acked():
			f.acked++
			seqOf[o.r.ID] = o.seq
			if o.direct() {
				f.direct++
			} else if o.r.Spooled {
				f.spooled++
			}
		default:
			f.non2xx++
		}
	}
	times := map[string]int{}
	for _, r := range rc.all() {
		id := r.Header.Get("webhook-id")
		times[id]++
		if seq, ok := seqOf[id]; ok && !bytes.Equal(r.Body, body(seq)) {
			f.mismatched++
		}
	}
	for id, n := range times {
		f.duplicated += n - 1
		if _, ok := seqOf[id]; ok {
			f.delivered++
		} else {
			f.unacked++
		}
	}
	for id := range seqOf {
		if times[id] == 0 {
			f.lost = append(f.lost, id)
		}
	}
	slices.Sort(f.lost)
	in := map[string]bool{}
	for _, id := range inStream {
		if in[id] {
			f.streamDuplicates++
		}
		in[id] = true
	}
	for id := range seqOf {
		if !in[id] {
			f.missing++
		}
	}
	return f
}

// log prints the figures as one "measured:" line.
func (f lossFigures) log(t *testing.T, what string, secs float64) {
	t.Helper()
	t.Logf("measured (%s): acked %d (direct %d, spooled %d), delivered %d, lost %d, duplicated %d, non-2xx %d, transport errors %d, body mismatches %d, acked but missing from the stream %d, duplicate stream entries %d, %.1f seconds",
		what, f.acked, f.direct, f.spooled, f.delivered, len(f.lost), f.duplicated, f.non2xx, f.transportErrs, f.mismatched, f.missing, f.streamDuplicates, secs)
}

// check fails the test for a broken promise to group: an acknowledged
// event lost or its body changed. Duplicate deliveries are at-least-once
// and only reported.
func (f lossFigures) check(t *testing.T, group string) {
	t.Helper()
	if len(f.lost) > 0 {
		t.Errorf("group %s: lost %d acknowledged events, want 0 (e.g. %v)", group, len(f.lost), f.lost[:min(3, len(f.lost))])
	}
	if f.mismatched > 0 {
		t.Errorf("group %s: %d deliveries carried another body than the one published, want 0", group, f.mismatched)
	}
}

// checkStream fails the test when an acknowledged event is not in the
// stream (no group can ever read it) or one is written there twice (a
// spool drain that is not idempotent).
func (f lossFigures) checkStream(t *testing.T) {
	t.Helper()
	if f.missing > 0 {
		t.Errorf("%d acknowledged events are not in the stream, want 0", f.missing)
	}
	if f.streamDuplicates > 0 {
		t.Errorf("%d stream entries repeat an event id, want 0 (spool drain not idempotent)", f.streamDuplicates)
	}
}

// streamEventIDs reads every entry of the topics' streams and returns their
// event ids (empty if Redis cannot be read: only a diagnostic).
func streamEventIDs(t *testing.T, rdb goredis.Cmdable, topics ...string) []string {
	t.Helper()
	var out []string
	for _, topic := range topics {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		msgs, err := rdb.XRange(ctx, "sidecar:{"+topic+"}", "-", "+").Result()
		cancel()
		if err != nil {
			t.Logf("reading the stream of %s: %v", topic, err)
			continue
		}
		for _, m := range msgs {
			if id, ok := m.Values["id"].(string); ok {
				out = append(out, id)
			}
		}
	}
	return out
}

// TestSentinelAuthForms: every documented way to give a Sentinel set's
// passwords reaches READY and delivers one event, against a set whose
// master and replica require a password (and, where the form says so,
// whose sentinels require one too), and no text the sidecar shows — log,
// /v1/status, /readyz, /metrics, `sidecar check` (text and JSON) —
// contains a password. Before issue 9, user:password@ went to the
// sentinels only, and a master with requirepass refused the sidecar
// (NOAUTH) for ever.
func TestSentinelAuthForms(t *testing.T) {
	s := redistest.StartSentinel(t)
	// s.URL is redis://<sentinel1>?master_name=…&addr=<sentinel2>&addr=<sentinel3>.
	hostAndQuery := strings.TrimPrefix(s.URL, "redis://")
	for _, phase := range []struct {
		data, sentinel string // the passwords the set requires
		forms          []struct{ name, url string }
	}{
		{data: redisPassword, sentinel: redisPassword, forms: []struct{ name, url string }{
			{"userinfo: every node", "redis://:" + redisPassword + "@" + hostAndQuery},
			{"user and password: every node", "redis://default:" + redisPassword + "@" + hostAndQuery},
		}},
		{data: redisPassword, sentinel: sentinelPass, forms: []struct{ name, url string }{
			{"userinfo and sentinel_password", "redis://:" + redisPassword + "@" + hostAndQuery + "&sentinel_password=" + sentinelPass},
			{"password and sentinel_password", "redis://" + hostAndQuery + "&password=" + redisPassword + "&sentinel_password=" + sentinelPass},
			{"go-redis form: userinfo for the sentinels, password for the data nodes", "redis://:" + sentinelPass + "@" + hostAndQuery + "&password=" + redisPassword},
		}},
		{data: redisPassword, forms: []struct{ name, url string }{
			{"password: the data nodes only", "redis://" + hostAndQuery + "&password=" + redisPassword},
		}},
		{sentinel: sentinelPass, forms: []struct{ name, url string }{
			{"sentinel_password: the sentinels only", "redis://" + hostAndQuery + "&sentinel_password=" + sentinelPass},
		}},
	} {
		s.SetAuth(phase.data, phase.sentinel)
		for _, form := range phase.forms {
			t.Run(form.name, func(t *testing.T) {
				deliverOneAndRequireHidden(t, form.url, config.RedactURL(form.url), "", redisPassword, sentinelPass)
				// `sidecar check` asked the sentinels with their password.
				out, _ := runBinary(t, []string{"REDIS_URL=" + form.url, "SIDECAR_SPOOL_DIR=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}, "check", "--json")
				var rep checkReport
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					t.Fatalf("check --json: %v\n%s", err, out)
				}
				if c := rep.find("Sentinel"); !c.Passed {
					t.Errorf("check: Sentinel: got %+v, want passed", c)
				}
			})
		}
	}
	s.SetAuth("", "") // the harness's own probes ask without a password
}

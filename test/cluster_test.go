package test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// On Cluster the sidecar follows a failover within 5 s of the replica's
// promotion; a dead shard holds back only its own topics; and nothing
// acknowledged is lost on the way.
func TestClusterMasterKilledFollowedWithinFiveSecondsOtherShardUntouched(t *testing.T) {
	const (
		rate    = 100 // per topic per second
		clients = 2   // per topic
		bound   = 5 * time.Second
		// Publishing goes on until topic A has been direct for steady since
		// it recovered, or watch after the promotion; then the spool and
		// the subscriber get drain to deliver everything.
		steady = 2 * time.Second
		watch  = 12 * time.Second
		drain  = 25 * time.Second
	)
	c := redistest.StartCluster(t)
	topicA, topicB, masterA, masterB := topicsOnTwoMasters(t, c)
	rc := newReceiver(t)
	startSidecar(t, "calendar", "REDIS_URL="+c.URL, "SIDECAR_CONFIG="+patientSubscriberConfig(t, "calendar", rc.url(), topicA, topicB))
	pub := startSidecar(t, "processor", "REDIS_URL="+c.URL, "SIDECAR_SERVICE=processor")
	requireDirectPublish(t, pub, topicA)
	requireDirectPublish(t, pub, topicB)

	start := time.Now()
	loadA := startPacedLoad(pub, topicA, rate, clients, 0, 0)
	loadB := startPacedLoad(pub, topicB, rate, clients, 1_000_000, 0)
	eventually.True(t, 20*time.Second, "two seconds of load on both topics", func() bool {
		return loadA.sent() >= 2*rate && loadB.sent() >= 2*rate
	})
	killAt := time.Now()
	c.KillNode(masterA)
	promoted, promotedAt := c.WaitPromotion(masterA)
	t.Logf("master of topic A %s SIGKILLed %v into the load; replica %s promoted %v after the kill (topic B on %s)",
		masterA, killAt.Sub(start).Round(time.Millisecond), promoted, promotedAt.Sub(killAt).Round(time.Millisecond), masterB)
	for time.Since(promotedAt) < watch {
		if at, ok := directSince(loadA.outcomes(), killAt); ok && time.Since(at) >= steady {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the load's answers
	}
	loadA.stop()
	loadB.stop()
	loadEnd := time.Now()

	outsA, outsB := loadA.outcomes(), loadB.outcomes()
	recoveredAt, recovered := directSince(outsA, killAt)
	notDirectA := 0
	for _, o := range outsA {
		if o.done.After(killAt) && !o.direct() {
			notDirectA++
		}
	}
	var notDirectB []pacedOutcome
	for _, o := range outsB {
		if !o.direct() {
			notDirectB = append(notDirectB, o)
		}
	}
	outs := slices.Concat(outsA, outsB)
	waitAcknowledgedDelivered(rc, outs, time.Until(loadEnd.Add(drain)))
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show
	f := tallyLoss(outs, rc, streamEventIDs(t, c.Client(t), topicA, topicB))

	followed := "not within " + watch.String()
	if recovered {
		followed = recoveredAt.Sub(promotedAt).Round(time.Millisecond).String()
	}
	t.Logf("measured: topic A direct again %s after the replica's promotion (%d of its %d publishes since the kill not direct); topic B %d of %d publishes not direct%s",
		followed, notDirectA, countSince(outsA, killAt), len(notDirectB), len(outsB), describeSpan(notDirectB, killAt))
	f.log(t, fmt.Sprintf("group calendar, topics A and B, lost = not delivered %v after the last publish", drain), time.Since(start).Seconds())

	if !recovered || recoveredAt.Sub(promotedAt) >= bound {
		t.Errorf("topic A: publishes direct again %s after the promotion, want within %v", followed, bound)
	}
	if len(notDirectB) > 0 {
		t.Errorf("topic B (master %s, alive throughout): %d publishes not direct, want 0: a dead shard must hold back only its own topics", masterB, len(notDirectB))
	}
	f.checkStream(t)
	f.check(t, "calendar")
}

// topicsOnTwoMasters picks two fresh topics whose streams live on
// different masters.
func topicsOnTwoMasters(t *testing.T, c *redistest.Cluster) (a, b, masterA, masterB string) {
	t.Helper()
	a = redistest.UniqueTopic(t, "a")
	masterA = c.MasterFor("sidecar:{" + a + "}")
	for range 100 {
		b = redistest.UniqueTopic(t, "b")
		if masterB = c.MasterFor("sidecar:{" + b + "}"); masterB != masterA {
			return a, b, masterA, masterB
		}
	}
	t.Fatalf("100 topics all on the master of %s", a)
	return
}

// directSince returns when publishes became direct for good after since:
// the answer time of the first direct publish after the last one that was
// not (spooled, refused, unanswered). ok is false while the last is not direct.
func directSince(outs []pacedOutcome, since time.Time) (time.Time, bool) {
	outs = slices.Clone(outs)
	slices.SortFunc(outs, func(x, y pacedOutcome) int { return x.done.Compare(y.done) })
	var at time.Time
	ok := false
	for _, o := range outs {
		if o.done.Before(since) {
			continue
		}
		switch {
		case !o.direct():
			ok = false
		case !ok:
			at, ok = o.done, true
		}
	}
	return at, ok
}

func countSince(outs []pacedOutcome, since time.Time) int {
	n := 0
	for _, o := range outs {
		if o.done.After(since) {
			n++
		}
	}
	return n
}

// describeSpan says when the publishes in outs were answered, relative to
// the kill, and how.
func describeSpan(outs []pacedOutcome, kill time.Time) string {
	if len(outs) == 0 {
		return ""
	}
	first, last := outs[0].done, outs[0].done
	spooled, refused, unanswered := 0, 0, 0
	for _, o := range outs {
		if o.done.Before(first) {
			first = o.done
		}
		if o.done.After(last) {
			last = o.done
		}
		switch {
		case o.err != nil:
			unanswered++
		case o.r.Spooled:
			spooled++
		default:
			refused++
		}
	}
	return fmt.Sprintf(" (spooled %d, non-2xx %d, unanswered %d; from %v to %v after the kill)",
		spooled, refused, unanswered, first.Sub(kill).Round(time.Millisecond), last.Sub(kill).Round(time.Millisecond))
}

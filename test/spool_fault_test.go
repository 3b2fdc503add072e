package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// mountSpoolTmpfs mounts a tmpfs of the given size (mount's "size=")
// on a fresh directory, unmounted by t.Cleanup. Call it before starting a
// sidecar that uses it, so the sidecar is killed before the unmount.
func mountSpoolTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir() // its removal is registered first, so it runs after the unmount
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		redistest.SkipOrFail(t, fmt.Sprintf("a full-disk test mounts a small tmpfs and needs root: mount: %v", err))
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// spoolDiskUsed is how many bytes of the file system holding dir are in use.
func spoolDiskUsed(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// spoolSegments lists the segment files anywhere under a spool directory
// (one spool, or one per topic).
func spoolSegments(t *testing.T, dir string) []string {
	t.Helper()
	var segs []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".seg") {
			segs = append(segs, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

// kibBody is event i's body padded to about 1 KiB.
func kibBody(i int) []byte {
	return fmt.Appendf(nil, `{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 1000))
}

// TestSpoolDiskFullDrainFreesItAndRedeliversNothing: an outage fills the
// spool's disk itself (a 1 MiB tmpfs, far below SIDECAR_SPOOL_MAX_BYTES).
// When Redis returns, the drain must work on the full disk — acknowledging
// must need no new disk block — and give the space back; a restart long
// after must not deliver the drained events again; and the next outage must
// find the spool's capacity back.
func TestSpoolDiskFullDrainFreesItAndRedeliversNothing(t *testing.T) {
	spoolDir := mountSpoolTmpfs(t, "1m")
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "diskfull")
	rc := newReceiver(t)
	// os/exec keeps only the last value of a repeated key, so this
	// SIDECAR_SPOOL_DIR wins over the harness's own (checked below).
	pub := startSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor",
		"SIDECAR_SPOOL_DIR="+spoolDir, "SIDECAR_SPOOL_MAX_BYTES=64MiB", "SIDECAR_IDEMPOTENCY_WINDOW=2s")
	startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_CONFIG="+subscriberConfig(t, topic, rc.url(), ""))
	if _, err := os.Stat(filepath.Join(spoolDir, "LOCK")); err != nil {
		t.Fatalf("the publisher does not use the tmpfs as its spool: %v", err)
	}
	idle := spoolDiskUsed(t, spoolDir)

	// Outage 1: publish until the disk, not the spool's bound, refuses.
	redis.Kill()
	var want []string
	var refusal receipt
	for i := 0; ; i++ {
		if i == 5000 {
			t.Fatal("5000 events of 1 KiB and the 1 MiB disk never filled")
		}
		code, r := pub.publish(topic, kibBody(i))
		if code == http.StatusAccepted && r.Spooled {
			want = append(want, r.ID)
			continue
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("publish %d on a filling disk: got %d %+v, want 202 spooled or 503", i, code, r)
		}
		refusal = r
		break
	}
	if len(want) < 500 || len(spoolSegments(t, spoolDir)) == 0 {
		t.Fatalf("accepted %d events into %v before the 503: want the 1 MiB tmpfs spool full", len(want), spoolSegments(t, spoolDir))
	}
	full := spoolDiskUsed(t, spoolDir)

	accepted := len(want)
	redis.Restart()
	exactlyOnceInOrder(t, rc, want)
	delivered := rc.count()
	eventually.True(t, 15*time.Second, "the drained segments deleted and the disk given back", func() bool {
		return len(spoolSegments(t, spoolDir)) == 0 && spoolDiskUsed(t, spoolDir) <= idle+16<<10
	})
	drainedUsed := spoolDiskUsed(t, spoolDir)

	// Past the idempotency window Redis no longer knows the ids: only the
	// spool's cursor stands between a restart and a second delivery.
	rdb := redis.Client(t)
	eventually.True(t, 15*time.Second, "the 2s idempotency keys expired", func() bool {
		keys, err := rdb.Keys(context.Background(), "sidecar:{"+topic+"}:idem:*").Result()
		return err == nil && len(keys) == 0
	})
	pub.kill()
	pub.restart()
	// A marker published now queues behind anything the restarted spool
	// replays, so once it is delivered a replay would have shown.
	marker := pub.mustPublish(topic, body(0))
	want = append(want, marker.ID)
	exactlyOnceInOrder(t, rc, want)
	redelivered := rc.count() - delivered - 1 // 0, or exactlyOnceInOrder failed

	// Outage 2: the capacity is back.
	redis.Kill()
	second := 0
	for i := range 300 {
		code, r := pub.publish(topic, kibBody(100000+i))
		if code != http.StatusAccepted || !r.Spooled {
			t.Fatalf("publish %d in the second outage: got %d %+v, want 202 spooled (the disk was given back)", i, code, r)
		}
		want = append(want, r.ID)
		second++
	}
	redis.Restart()
	exactlyOnceInOrder(t, rc, want)
	eventually.True(t, 15*time.Second, "the second drain's segments deleted", func() bool {
		return len(spoolSegments(t, spoolDir)) == 0
	})
	t.Logf("measured: 1 MiB tmpfs spool (bound 64 MiB): accepted %d events of ~1 KiB, then 503 %s; delivered %d, lost %d, duplicated 0, in order; "+
		"disk used %d KiB idle, %d KiB full, %d KiB after the drain; restart past the 2s window redelivered %d; second outage accepted %d of 300, delivered %d",
		accepted, refusal.Code, delivered, accepted-delivered, idle>>10, full>>10, drainedUsed>>10, redelivered, second, rc.count()-delivered-1)
}

// TestSpoolCorruptLengthLosesNoEvent: a spool written during an outage
// has one length byte of a record in the middle corrupted while the
// publisher is down. The length now runs past the end of the segment,
// which recovery used to take for a torn tail, cutting every record after
// it. Every event must still be delivered, once, in order.
func TestSpoolCorruptLengthLosesNoEvent(t *testing.T) {
	redis, topic, rc, pub, _ := startPair(t, "corrupt")
	redis.Kill()
	const n = 500
	var want []string
	for i := range n {
		want = append(want, pub.mustPublishSpooled(topic, body(i)).ID)
	}
	pub.kill()

	segs := spoolSegments(t, pub.spoolDir)
	if len(segs) != 1 {
		t.Fatalf("segments: got %v, want one", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	// Follow the headers: magic 0xE7, flags, length (4, LE), CRC (4), payload.
	var starts []int
	for off := 0; off < len(b); off += 10 + int(binary.LittleEndian.Uint32(b[off+2:])) {
		if b[off] != 0xE7 {
			t.Fatalf("no record header at offset %d", off)
		}
		starts = append(starts, off)
	}
	if len(starts) != n {
		t.Fatalf("records in the segment: got %d, want %d", len(starts), n)
	}
	victim := starts[n/2]
	b[victim+4] += 0x10 // the length's third byte: 1 MiB longer, past the segment's end
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}

	redis.Restart()
	start := time.Now()
	pub.restart()
	exactlyOnceInOrder(t, rc, want)
	logs, _ := os.ReadFile(pub.log.Name())
	if !strings.Contains(string(logs), "damaged record repaired") {
		t.Fatalf("the publisher's log does not report the repaired record:\n%s", tail(logs, 30))
	}
	t.Logf("measured: %d events spooled, length byte corrupted in record %d (offset %d of %d); after restart delivered %d, lost 0, duplicated 0, in order, in %v",
		n, n/2, victim, len(b), rc.count(), time.Since(start).Round(time.Millisecond))
}

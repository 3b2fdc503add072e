package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// mountTmpfs mounts a tmpfs of size bytes on a fresh directory, unmounted
// by t.Cleanup. It needs root (CAP_SYS_ADMIN).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir() // registered first, so removed after the unmount
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		redistest.SkipOrFail(t, fmt.Sprintf("a full-disk test needs a small tmpfs (run as root): mount: %v", err))
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

func diskUsed(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// TestDrainOnAFullDisk fills a real (tmpfs) disk with spooled events, then
// drains them: acknowledging must need no new disk block, give the space
// back, and leave a position that a reopen does not replay.
func TestDrainOnAFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "256k")
	s, _ := open(t, dir, Options{MaxBytes: 64 << 20}) // far above the disk: the disk fills first
	e := ev(0)
	e.Data = make([]byte, 1024)
	n := 0
	var err error
	for ; n < 10000; n++ {
		e.ID = fmt.Sprintf("ev-%05d", n)
		if err = s.Append("topic", e, 0); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrFull) {
		t.Fatalf("append %d on a full disk: got %v, want ENOSPC", n, err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var onDisk int64
	for _, p := range segs {
		st, _ := os.Stat(p)
		onDisk += st.Size()
	}
	if st := s.Stats(); st.Events != n || st.Bytes != onDisk {
		t.Fatalf("after the failed append: stats %+v, segments hold %d bytes; want %d events and no half-written record", st, onDisk, n)
	}
	t.Logf("measured: %d events of 1 KiB filled a 256 KiB disk; the next append failed with %v", n, err)

	recs, err := s.Peek(2 * n)
	if err != nil || len(recs) != n {
		t.Fatalf("peek: got %d records, %v; want %d", len(recs), err, n)
	}
	if err := s.Ack(recs); err != nil {
		t.Fatalf("ack on a full disk: %v", err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) != 0 {
		t.Fatalf("drained segments left on the full disk: %v", segs)
	}
	if used := diskUsed(t, dir); used > 16<<10 {
		t.Fatalf("disk used after the drain: got %d bytes, want near zero", used)
	}
	s.Close()

	s2, _ := open(t, dir, Options{MaxBytes: 64 << 20})
	if st := s2.Stats(); st.Events != 0 {
		t.Fatalf("reopened after the drain: got %d events, want 0 (a replay would duplicate them)", st.Events)
	}
	appendN(t, s2, 0, 50) // capacity is back
	if ids, _ := peekIDs(t, s2, 100); fmt.Sprint(ids) != fmt.Sprint(want(0, 50)) {
		t.Fatalf("appends after the drain: got %v", ids)
	}
}

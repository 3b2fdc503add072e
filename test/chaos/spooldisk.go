package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// spoolDisk is a publisher's spool directory on a small tmpfs of its own,
// so the nemesis can fill the disk with a ballast file and free it again
// (mounting needs root; without it the directory is a plain one and the
// spool-fill fault is not scheduled).
type spoolDisk struct {
	dir     string
	mounted bool
	why     string // why not mounted
}

// ballastName is hidden from the spool, which only reads ID, LOCK,
// topics/ and segment files at its top.
const ballastName = ".chaos-ballast"

func newSpoolDisk(dir string, size int64) (*spoolDisk, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	d := &spoolDisk{dir: dir}
	if os.Geteuid() != 0 {
		d.why = "not root: cannot mount a tmpfs"
		return d, nil
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		d.why = "mount tmpfs: " + err.Error()
		return d, nil
	}
	d.mounted = true
	return d, nil
}

// free is the bytes left on the disk.
func (d *spoolDisk) free() (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// fill writes a ballast file until at most leave bytes are free, and
// returns how many it wrote.
func (d *spoolDisk) fill(leave int64) (int64, error) {
	free, err := d.free()
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile(filepath.Join(d.dir, ballastName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := make([]byte, 16<<10)
	var wrote int64
	for want := free - leave; wrote < want; {
		n, err := f.Write(chunk[:min(int64(len(chunk)), want-wrote)])
		wrote += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			break // the spool took some meanwhile: full is full
		}
		if err != nil {
			return wrote, err
		}
	}
	return wrote, nil
}

// empty removes the ballast.
func (d *spoolDisk) empty() error {
	err := os.Remove(filepath.Join(d.dir, ballastName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// unmount detaches the tmpfs (lazily, should a process still hold it).
func (d *spoolDisk) unmount() error {
	if !d.mounted {
		return nil
	}
	d.mounted = false
	return syscall.Unmount(d.dir, syscall.MNT_DETACH)
}

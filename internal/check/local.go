package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"

	"github.com/fogis-sidecar/sidecar/internal/config"
)

// Doer models http.Client.
type Doer interface {
	Do(*http.Request) (*http.Response, error)
}

// checkWebhook HEADs a subscription's URL: any answer means it is up,
// whatever the method it allows.
func checkWebhook(ctx context.Context, client Doer, w Webhook, add addFunc) {
	name := "Webhook " + w.Topic
	shown := config.RedactURL(w.URL)
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodHead, w.URL, nil)
	if err != nil {
		// Its error quotes the URL whole.
		add(name, false, false, "%s is not a valid URL", shown)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, shown redacted already
		}
		add(name, false, false, "%s unreachable: %v (events wait in Redis until it answers)", shown, err)
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	add(name, true, false, "%s answers (HTTP %d)", shown, resp.StatusCode)
}

// checkSpool writes and fsyncs a probe in the spool directory, as the
// spool will, and compares the free space with spool.max_bytes.
func checkSpool(dir string, maxBytes int64, add addFunc) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		add("Spool directory", false, true, "%s cannot be created: %v", dir, err)
		return
	}
	probe := filepath.Join(dir, ".check-probe")
	f, err := os.Create(probe)
	if err == nil {
		_, err = f.Write([]byte("probe"))
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		os.Remove(probe)
	}
	if err != nil {
		add("Spool directory", false, true, "%s is not writable: %v", dir, err)
		return
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		add("Spool directory", true, false, "%s writable (free space unknown: %v)", dir, err)
		return
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < maxBytes {
		add("Spool directory", false, false, "%s writable, but %s free is less than spool.max_bytes %s", dir, human(free), human(maxBytes))
		return
	}
	add("Spool directory", true, false, "%s writable, %s free (spool.max_bytes %s)", dir, human(free), human(maxBytes))
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

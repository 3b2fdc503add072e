// Package browsertest drives the web console in headless Chromium for
// tests: it starts the browser, opens tabs, waits on the page's state and
// saves screenshots. Only tests import it.
package browsertest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium shared by a test's tabs.
type Browser struct {
	ctx context.Context
}

// Start starts headless Chromium for the test and stops it at the end.
// Without chromium the test is skipped, except under CI=true, where .ci/run
// installs it and its absence is a failure.
func Start(t *testing.T) *Browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found (%v): CI=true, so the console's browser tests must run (apt-get install chromium)", err)
		}
		t.Skipf("chromium not found (%v): skipping the console's browser tests; apt-get install chromium to run them", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.NoSandbox, // the tests run as root in CI
		chromedp.WindowSize(1440, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx (no deadline)
		t.Fatalf("starting chromium: %v", err)
	}
	return &Browser{ctx: ctx}
}

// Tab is one page of the browser, with what its console said.
type Tab struct {
	t   *testing.T
	ctx context.Context
	// Timeout bounds each wait and action (default 10 s).
	Timeout time.Duration

	mu       sync.Mutex
	messages []string
	thrown   []string
	done     chan struct{}
}

// Open opens url in a new tab. At the end of the test the tab fails it on
// any uncaught exception of the page, saves a full-page screenshot into
// t.TempDir() and, when the test failed, also to $SIDECAR_SCREENSHOT_DIR (or
// a directory it names in the log).
func (b *Browser) Open(t *testing.T, url string) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	p := &Tab{t: t, ctx: ctx, Timeout: 10 * time.Second, done: make(chan struct{})}
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("opening a tab: %v", err)
	}
	console := chromedp.Console(ctx)
	go func() {
		defer close(p.done)
		for m, err := range console {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.messages = append(p.messages, m.String())
			if m.IsException() {
				p.thrown = append(p.thrown, m.String())
			}
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		p.screenshot()
		cancel()
		<-p.done
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.thrown) > 0 {
			t.Errorf("the page threw: %s", strings.Join(p.thrown, "\n"))
		}
		if t.Failed() {
			t.Logf("page console:\n%s", strings.Join(p.messages, "\n"))
		}
	})
	p.Do(chromedp.Navigate(url))
	return p
}

// Context is the tab's chromedp context, for actions this package lacks.
func (p *Tab) Context() context.Context { return p.ctx }

// Capture returns a full-page PNG, scrolled to the top so the sticky
// header sits where it belongs.
func (p *Tab) Capture() ([]byte, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.Timeout)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`)); err != nil {
		return nil, err
	}
	return chromedp.Run(ctx, chromedp.FullScreenshot(100))
}

func (p *Tab) screenshot() {
	png, err := p.Capture()
	if err != nil {
		p.t.Logf("screenshot: %v", err)
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name()) + ".png"
	path := filepath.Join(p.t.TempDir(), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Logf("screenshot: %v", err)
	}
	if !p.t.Failed() {
		return
	}
	dir := os.Getenv("SIDECAR_SCREENSHOT_DIR")
	if dir == "" {
		dir, err = os.MkdirTemp("", "console-screenshots-")
		if err != nil {
			p.t.Logf("screenshot: %v", err)
			return
		}
	}
	path = filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Logf("screenshot: %v", err)
		return
	}
	p.t.Logf("screenshot of the failed page: %s", path)
}

// Do runs actions with a deadline.
func (p *Tab) Do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, p.Timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("browser: %v", err)
	}
}

func decode(v []byte) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// Eval returns a JavaScript expression's value (a string as it is, any
// other value as JSON).
func (p *Tab) Eval(js string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, p.Timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](js))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", js, err)
	}
	return decode(v)
}

// Sel is the CSS selector of a data-testid.
func Sel(testid string) string { return fmt.Sprintf("[data-testid=%q]", testid) }

// TextJS is the expression of an element's trimmed text, "" when absent.
func TextJS(testid string) string {
	return fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").trim()`, Sel(testid))
}

// Text returns the element's trimmed text, "" when it is absent.
func (p *Tab) Text(testid string) string {
	p.t.Helper()
	return p.Eval(TextJS(testid))
}

// WaitJS waits until the expression is truthy and returns its value; on
// timeout it fails, naming what it waited for.
func (p *Tab) WaitJS(what, js string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, p.Timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[[]byte](js, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(p.Timeout)))
	if err != nil {
		p.t.Fatalf("waiting for %s: %v", what, err)
	}
	return decode(v)
}

// WaitText waits until the element's text is want.
func (p *Tab) WaitText(testid, want string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, p.Timeout)
	defer cancel()
	js := fmt.Sprintf(`%s === %q`, TextJS(testid), want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(p.Timeout))); err != nil {
		p.t.Fatalf("waiting for %s to read %q: got %q (%v)", testid, want, p.Text(testid), err)
	}
}

// WaitPresent waits until an element has the testid.
func (p *Tab) WaitPresent(testid string) {
	p.t.Helper()
	p.WaitJS(testid, fmt.Sprintf(`document.querySelector(%q) !== null`, Sel(testid)))
}

// WaitGone waits until no element has the testid.
func (p *Tab) WaitGone(testid string) {
	p.t.Helper()
	p.WaitJS(testid+" to go", fmt.Sprintf(`document.querySelector(%q) === null`, Sel(testid)))
}

// Click clicks the element with the mouse, as a user does, once it is
// there and enabled.
func (p *Tab) Click(testid string) {
	p.t.Helper()
	p.WaitJS(testid+" enabled", fmt.Sprintf(`(e => e !== null && !e.disabled)(document.querySelector(%q))`, Sel(testid)))
	p.Do(chromedp.Click(chromedp.CSS(Sel(testid))))
}

// TypeInto replaces an input's value by typing. (chromedp.Clear resets
// the value attribute only, not what was typed or set before, and
// chromedp.SetValue refuses "".)
func (p *Tab) TypeInto(testid, text string) {
	p.t.Helper()
	p.Eval(fmt.Sprintf(`document.querySelector(%q).value = ""`, Sel(testid)))
	p.Do(chromedp.SendKeys(chromedp.CSS(Sel(testid)), text))
}

// Choose picks an option of a select, as a user does: value, then change.
func (p *Tab) Choose(testid, value string) {
	p.t.Helper()
	p.Eval(fmt.Sprintf(`(() => { const s = document.querySelector(%q); s.value = %q; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value })()`, Sel(testid), value))
}

// WaitToast waits for a toast whose text contains want and returns it.
func (p *Tab) WaitToast(want string) string {
	p.t.Helper()
	return p.WaitJS("a toast saying "+want, fmt.Sprintf(
		`[...document.querySelectorAll('[data-testid="toast"]')].map(e => e.textContent).find(s => s.includes(%q)) || ""`, want))
}

package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// behaviour is how a receiver answers; the nemesis switches it.
type behaviour int

const (
	normal   behaviour = iota
	slow               // answers 200 after a delay
	failing            // answers a retriable status (5xx, 429)
	redirect           // answers 3xx pointing at the trap: every event is a legitimate dead letter
	down               // listener closed: connection refused
)

func (b behaviour) String() string {
	return [...]string{"normal", "slow", "failing", "redirect", "down"}[b]
}

// request is one webhook request a receiver got.
type request struct {
	rx      string // receiver name
	at      time.Time
	id      string // webhook-id
	ceID    string
	topic   string // Sidecar-Topic
	attempt string // Sidecar-Attempt
	body    []byte
	ev      evKey // the logical event the body names
	evOK    bool
	// status is what the receiver answered; 0 when the connection was gone
	// before it could (the receiver went down, or the sidecar gave up).
	status int
	sigErr string // "" when the Standard Webhooks signature checks out
}

// receiver is a webhook endpoint of one subscriber sidecar: it records
// every request and answers as its behaviour says.
type receiver struct {
	name, group string
	secret      []byte // the subscriber's webhook key: signatures are checked
	trapURL     string // where redirects point

	mu        sync.Mutex
	addr      string
	srv       *http.Server
	behaviour behaviour
	latency   time.Duration
	status    int
	reqs      []request
}

func newReceiver(name, group string, secret []byte, trapURL string) *receiver {
	return &receiver{name: name, group: group, secret: secret, trapURL: trapURL, addr: "127.0.0.1:0"}
}

func (rc *receiver) url() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return "http://" + rc.addr + "/hook"
}

// up starts listening (again) on the receiver's address.
// Only the nemesis's lane and the end of the run call up and goDown, one
// at a time; the lock guards against the handlers, which record requests.
func (rc *receiver) up(ctx context.Context) error {
	rc.mu.Lock()
	running, addr := rc.srv != nil, rc.addr
	rc.mu.Unlock()
	if running {
		return nil
	}
	var ln net.Listener
	err := waitFor(ctx, 10*time.Second, "listen on "+addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	if err != nil {
		return fmt.Errorf("receiver %s: %w", rc.name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(rc.serve), ReadHeaderTimeout: 5 * time.Second}
	rc.mu.Lock()
	rc.addr, rc.srv = ln.Addr().String(), srv
	rc.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// goDown closes the listener and every connection: the sidecar gets
// connection refused (or a reset mid-request) until up.
func (rc *receiver) goDown() {
	rc.mu.Lock()
	srv := rc.srv
	rc.srv = nil
	rc.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// set switches the behaviour (not down: see goDown).
func (rc *receiver) set(b behaviour, latency time.Duration, status int) {
	rc.mu.Lock()
	rc.behaviour, rc.latency, rc.status = b, latency, status
	rc.mu.Unlock()
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the sidecar went away mid-request: nothing was delivered
	}
	req := request{rx: rc.name, at: at, id: r.Header.Get("webhook-id"), ceID: r.Header.Get("ce-id"),
		topic: r.Header.Get("Sidecar-Topic"), attempt: r.Header.Get("Sidecar-Attempt"), body: body,
		sigErr: verifySignature(rc.secret, r.Header, body)}
	req.ev, req.evOK = parseBody(body)
	rc.mu.Lock()
	b, latency, status := rc.behaviour, rc.latency, rc.status
	rc.mu.Unlock()
	answer := http.StatusOK
	switch b {
	case slow:
		t := time.NewTimer(latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	case failing:
		answer = status
		if status == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "1")
		}
	case redirect:
		answer = status
		w.Header().Set("Location", rc.trapURL)
	}
	if r.Context().Err() != nil {
		answer = 0 // the connection is gone: the sidecar never sees an answer
	}
	req.status = answer
	rc.mu.Lock()
	rc.reqs = append(rc.reqs, req)
	rc.mu.Unlock()
	if answer != 0 {
		w.WriteHeader(answer)
	}
}

// requests is a copy of what the receiver got, in arrival order.
func (rc *receiver) requests() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

// close stops the receiver for good.
func (rc *receiver) close() { rc.goDown() }

// verifySignature checks the Standard Webhooks signature: one of the
// space-separated "v1,<base64>" values must be the HMAC-SHA256 of
// "<webhook-id>.<webhook-timestamp>.<body>".
func verifySignature(key []byte, h http.Header, body []byte) string {
	if key == nil {
		return ""
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if sigs == "" {
		return "no webhook-signature header"
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		return fmt.Sprintf("webhook-timestamp %q", ts)
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%s.", id, ts)
	m.Write(body)
	want := m.Sum(nil)
	for s := range strings.FieldsSeq(sigs) {
		v, b64, ok := strings.Cut(s, ",")
		if !ok || v != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return ""
		}
	}
	return "webhook-signature does not match the body"
}

// trap is where redirects point: the sidecar must never follow them, so
// any request here is a violation.
type trap struct {
	srv  *http.Server
	addr string
	hits atomic.Int64
	mu   sync.Mutex
	last string
}

func startTrap() (*trap, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	tr := &trap{addr: ln.Addr().String()}
	tr.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.hits.Add(1)
		tr.mu.Lock()
		tr.last = r.Method + " " + r.URL.String() + " webhook-id " + r.Header.Get("webhook-id")
		tr.mu.Unlock()
		w.WriteHeader(http.StatusOK) // an acknowledgement the sidecar must never have asked for
	})}
	go func() {
		if err := tr.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			tr.mu.Lock()
			tr.last = "serve: " + err.Error()
			tr.mu.Unlock()
		}
	}()
	return tr, nil
}

func (tr *trap) url() string { return "http://" + tr.addr + "/elsewhere" }

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// outcome is what one publish attempt established.
type outcome int

const (
	acked   outcome = iota // 2xx with an event id: a promise
	refused                // a definite no: an HTTP error, or the connection refused before anything was sent
	unknown                // no answer (timeout, reset): the event may or may not have been taken
)

func (o outcome) String() string { return [...]string{"acked", "refused", "unknown"}[o] }

// attempt is one HTTP publish of an event.
type attempt struct {
	sent, done time.Time
	outcome    outcome
	code       int // HTTP status; 0 without an answer
	id         string
	streamID   string
	spooled    bool
	fallback   string // the route's fallback outcome while Redis was down
	replayed   bool   // Idempotent-Replayed: true
	errCode    string // the error answer's "code"
	note       string // transport error, or an answer that is not what the contract says
}

// pubEvent is one logical event: a key's sequence number, published with
// one body and, when it carries an Idempotency-Key, retried once on a 5xx
// or no answer.
type pubEvent struct {
	client, key string
	seq         int
	sidecar     string // the publishing sidecar; a key always uses the same one
	topic, path string
	idemKey     string
	body        []byte
	attempts    []attempt
}

func (e *pubEvent) name() string { return fmt.Sprintf("%s#%d", e.key, e.seq) }

// acked reports whether some attempt was acknowledged.
func (e *pubEvent) acked() bool {
	for _, a := range e.attempts {
		if a.outcome == acked {
			return true
		}
	}
	return false
}

// uncertain reports whether some attempt had no answer.
func (e *pubEvent) uncertain() bool {
	for _, a := range e.attempts {
		if a.outcome == unknown {
			return true
		}
	}
	return false
}

// ids are the event ids the sidecar named in its answers.
func (e *pubEvent) ids() []string {
	var out []string
	for _, a := range e.attempts {
		if a.id != "" {
			out = append(out, a.id)
		}
	}
	return out
}

// body of a published event: JSON with the key, its sequence number, the
// client, and padding of varying length and script, so byte-for-byte
// delivery is checked on more than ASCII.
type eventBody struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
	Pub string `json:"pub"`
	Pad string `json:"pad,omitempty"`
}

const padAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789éøß✓→中文"

func makeBody(rng *rand.Rand, client, key string, seq int) []byte {
	runes := []rune(padAlphabet)
	var pad strings.Builder
	for range rng.IntN(200) {
		pad.WriteRune(runes[rng.IntN(len(runes))])
	}
	b, _ := json.Marshal(eventBody{Key: key, Seq: seq, Pub: client, Pad: pad.String()})
	return b
}

// keyPlan is one key a client publishes: always through the same sidecar
// to the same topic (order is promised per publishing sidecar and topic).
type keyPlan struct {
	name, topic, path string
	seq               int
}

// client is one publishing service instance: it publishes its keys' next
// sequence numbers one at a time, waiting for each answer.
type client struct {
	name    string
	sidecar *proc
	keys    []*keyPlan
	rng     *rand.Rand
	next    int
}

// loadGen drives the clients at a total rate and records every answer.
type loadGen struct {
	rate      int
	idemShare float64 // share of events sent with an Idempotency-Key
	runID     string  // makes Idempotency-Keys unique to this run
	clients   []*client
	http      *http.Client

	mu     sync.Mutex
	events []*pubEvent
}

// publishTimeout is how long a client waits for a publish answer; past it
// the outcome is unknown. The sidecar answers within its publish timeout
// (500 ms) plus a spool write, so only a stopped or dying sidecar gets here:
// a publisher paused for 0.5–7 s leaves some answers unknown.
const publishTimeout = 3 * time.Second

// retryDelay is a client's pause before it retries an idempotent publish.
// A second is long enough that a retry after a paused sidecar's timeout
// often reaches it running again, and is answered from the first attempt
// (Idempotent-Replayed) — the path the Idempotency-Key exists for.
const retryDelay = time.Second

func newLoadGen(seed uint64, rate, nclients int, idemShare float64, runID string, pubs []*proc, topics [2]string, routed map[string]string) *loadGen {
	g := &loadGen{rate: rate, idemShare: idemShare, runID: runID,
		http: &http.Client{Timeout: publishTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: nclients, DisableCompression: true}}}
	for i := range nclients {
		pub := pubs[i%len(pubs)]
		c := &client{name: fmt.Sprintf("c%d", i), sidecar: pub, rng: rand.New(rand.NewPCG(seed, 1000+uint64(i)))}
		for k := range 3 {
			topic := topics[(i+k)%2]
			path := "/v1/publish/" + topic
			if p, ok := routed[pub.name+"/"+topic]; ok {
				path = p // the route with a fallback
			}
			c.keys = append(c.keys, &keyPlan{name: fmt.Sprintf("%s.k%d", c.name, k), topic: topic, path: path})
		}
		g.clients = append(g.clients, c)
	}
	return g
}

// run publishes until ctx ends, then waits for the answers in flight. A
// tick is dropped while every client waits on a slow answer, so a stall
// lowers the rate rather than bunching requests after it.
func (g *loadGen) run(ctx context.Context) {
	ticks := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range g.clients {
		wg.Go(func() {
			for range ticks {
				g.publishNext(c)
			}
		})
	}
	t := time.NewTicker(time.Second / time.Duration(g.rate))
	defer t.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
			select {
			case ticks <- struct{}{}:
			default:
			}
		}
	}
	close(ticks)
	wg.Wait()
}

func (g *loadGen) publishNext(c *client) {
	k := c.keys[c.next%len(c.keys)]
	c.next++
	k.seq++
	ev := &pubEvent{client: c.name, key: k.name, seq: k.seq, sidecar: c.sidecar.name, topic: k.topic, path: k.path,
		body: makeBody(c.rng, c.name, k.name, k.seq)}
	if c.rng.Float64() < g.idemShare {
		ev.idemKey = fmt.Sprintf("%s-%s-%d", g.runID, k.name, k.seq)
	}
	g.mu.Lock()
	g.events = append(g.events, ev)
	g.mu.Unlock()
	a := g.publish(c.sidecar.addr, ev)
	g.record(ev, a)
	// A retry of the same body under the same key is what a careful
	// client does when it cannot know whether its publish was taken.
	if ev.idemKey != "" && (a.outcome == unknown || a.code >= 500) {
		time.Sleep(retryDelay) // a client's back-off, not synchronisation
		g.record(ev, g.publish(c.sidecar.addr, ev))
	}
}

func (g *loadGen) record(ev *pubEvent, a attempt) {
	g.mu.Lock()
	ev.attempts = append(ev.attempts, a)
	g.mu.Unlock()
}

// receipt is a publish answer: the 202 body or the error shape.
type receipt struct {
	ID       string `json:"id"`
	StreamID string `json:"stream_id"`
	Spooled  bool   `json:"spooled"`
	Fallback string `json:"fallback"`
	Code     string `json:"code"`
	Error    string `json:"error"`
}

func (g *loadGen) publish(addr string, ev *pubEvent) attempt {
	a := attempt{sent: time.Now()}
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+ev.path, bytes.NewReader(ev.body))
	if err != nil {
		a.done, a.outcome, a.note = time.Now(), refused, err.Error()
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	if ev.idemKey != "" {
		req.Header.Set("Idempotency-Key", ev.idemKey)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		a.done, a.note = time.Now(), err.Error()
		a.outcome = unknown
		// Connection refused means nothing was sent — unless Go's transport
		// retried: it re-sends a request it counts as idempotent (a POST
		// with an Idempotency-Key) when a reused connection broke, so the
		// refusal may answer a second send whose first one the sidecar took
		// (30-minute soaks, standalone seed 1001 and Sentinel seed 2001:
		// pubA SIGKILLed mid-answer).
		if errors.Is(err, syscall.ECONNREFUSED) && ev.idemKey == "" {
			a.outcome = refused // nothing was sent: the sidecar is down
		}
		return a
	}
	raw, rerr := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	a.done, a.code = time.Now(), resp.StatusCode
	a.replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	var r receipt
	jerr := json.Unmarshal(raw, &r)
	a.id, a.streamID, a.spooled, a.fallback, a.errCode = r.ID, r.StreamID, r.Spooled, r.Fallback, r.Code
	switch {
	case resp.StatusCode/100 == 2 && rerr == nil && jerr == nil && r.ID != "":
		a.outcome = acked
	case resp.StatusCode/100 == 2:
		// A 2xx the client cannot read is not a receipt it can rely on.
		a.outcome, a.note = unknown, fmt.Sprintf("2xx without a readable receipt: %q (%v %v)", raw, rerr, jerr)
	case resp.StatusCode == http.StatusGatewayTimeout && r.Code == "outcome_unknown":
		// The sidecar says so itself: the write may have landed.
		a.outcome, a.note = unknown, strings.TrimSpace(string(raw))
	default:
		a.outcome, a.note = refused, strings.TrimSpace(string(raw))
	}
	return a
}

// snapshot returns copies of every event published so far.
func (g *loadGen) snapshot() []pubEvent {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]pubEvent, len(g.events))
	for i, e := range g.events {
		out[i] = *e
		out[i].attempts = append([]attempt(nil), e.attempts...)
	}
	return out
}

// ackSummary is what an event's client was told, attempt by attempt.
func ackSummary(e *pubEvent) string {
	var s string
	for i, a := range e.attempts {
		if i > 0 {
			s += "; "
		}
		s += a.short()
	}
	return s
}

// short is one attempt's answer in a few words.
func (a attempt) short() string {
	switch {
	case a.outcome == acked && a.spooled:
		return fmt.Sprintf("%d spooled id %s%s", a.code, a.id, fallbackNote(a.fallback))
	case a.outcome == acked:
		return fmt.Sprintf("%d id %s stream_id %s%s", a.code, a.id, a.streamID, map[bool]string{true: " (replayed)"}[a.replayed])
	case a.code != 0:
		return fmt.Sprintf("%d %s", a.code, a.errCode)
	default:
		return fmt.Sprintf("%s: %s", a.outcome, a.note)
	}
}

func fallbackNote(f string) string {
	if f == "" {
		return ""
	}
	return ", fallback " + f
}

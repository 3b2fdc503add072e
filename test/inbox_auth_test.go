package test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// The inbox (POST /v1/inbox/{topic}) takes a delivery only from a peer that
// proves itself: a Standard Webhooks signature made with the inbox key of
// that topic (HMAC-SHA256(secret, "sidecar-inbox:"+topic)), or the API
// token. These tests attack it the way a local process could.

// inboxKey is the key a peer signs its fallback POSTs to topic's inbox
// with, computed here independently of the sidecar's code.
func inboxKey(t *testing.T, topic string) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("sidecar-inbox:" + topic))
	return m.Sum(nil)
}

// rawKey is the webhook secret's own key: what deliveries to services are
// signed with.
func rawKey(t *testing.T) []byte {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// sigWith is a Standard Webhooks v1 signature entry made with key.
func sigWith(key []byte, id string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// inboxPost is one request to an inbox, in the webhook format a peer
// sidecar sends.
type inboxPost struct {
	webhookID string // "" = no webhook-id header
	ceID      string // "" = no ce-id header
	ts        int64  // webhook-timestamp; 0 = no header
	sig       string // webhook-signature; "" = no header
	auth      string // Authorization; "" = none
	body      []byte
}

// send POSTs p to s's inbox for topic and decodes the JSON answer.
func (p inboxPost) send(t *testing.T, s *sidecar, topic string) (int, receipt) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url("/v1/inbox/"+topic), bytes.NewReader(p.body))
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("ce-specversion", "1.0")
	h.Set("ce-source", "processor")
	h.Set("ce-type", "match_updates")
	for k, v := range map[string]string{"ce-id": p.ceID, "webhook-id": p.webhookID, "webhook-signature": p.sig, "Authorization": p.auth} {
		if v != "" {
			h.Set(k, v)
		}
	}
	if p.ts != 0 {
		h.Set("webhook-timestamp", strconv.FormatInt(p.ts, 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("inbox post: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r receipt
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("inbox answered %d with non-JSON %q", resp.StatusCode, raw)
	}
	if resp.StatusCode != http.StatusAccepted && (r.Code == "" || r.Error == "") {
		t.Fatalf("inbox answered %d %s, want the JSON error shape {error, code}", resp.StatusCode, raw)
	}
	return resp.StatusCode, r
}

// signed is a correctly signed post of body as event id to topic's inbox.
func signed(t *testing.T, topic, id string, body []byte) inboxPost {
	ts := time.Now().Unix()
	return inboxPost{webhookID: id, ceID: id, ts: ts, sig: sigWith(inboxKey(t, topic), id, ts, body), body: body}
}

// bodiesOf returns the received bodies with webhook-id id, in arrival order.
func bodiesOf(rc *receiver, id string) []string {
	var out []string
	for _, r := range rc.all() {
		if r.Header.Get("webhook-id") == id {
			out = append(out, string(r.Body))
		}
	}
	return out
}

// waitStreamSettled waits until the calendar group has read and
// acknowledged n entries of topic: every stream copy has been delivered or
// deduplicated by then.
func waitStreamSettled(t *testing.T, redis *redistest.Server, topic string, n int64) {
	t.Helper()
	key := "sidecar:{" + topic + "}"
	eventually.True(t, 20*time.Second, fmt.Sprintf("%d stream entries acknowledged by calendar", n), func() bool {
		p, err := redis.Client(t).XPending(context.Background(), key, "calendar").Result()
		info, ierr := redis.Client(t).XInfoGroups(context.Background(), key).Result()
		return err == nil && ierr == nil && p.Count == 0 && len(info) == 1 && info[0].EntriesRead == n
	})
}

// TestInboxDisabledWithoutSecretOrToken: with default settings any local
// process could POST a forged "order-42" to the inbox; it was delivered and
// the genuine order-42 published later was acknowledged as a duplicate and
// never delivered. Now the inbox is off until a setting turns it on, says
// which, and the genuine event is delivered.
func TestInboxDisabledWithoutSecretOrToken(t *testing.T) {
	redis, topic, rc, pub, cal := startPair(t, "inbox-default")
	forged := []byte(`{"order":42,"amount":"forged"}`)
	code, rep := inboxPost{webhookID: "order-42", ceID: "order-42", ts: time.Now().Unix(), body: forged}.send(t, cal, topic)
	t.Logf("measured: unauthenticated inbox post with default settings answered %d %s: %s", code, rep.Code, rep.Error)
	if code != http.StatusForbidden || rep.Code != "inbox_disabled" {
		t.Fatalf("inbox post with default settings: got %d %+v, want 403 inbox_disabled", code, rep)
	}
	for _, setting := range []string{"webhook_secret", "SIDECAR_WEBHOOK_SECRET", "api_token", "SIDECAR_API_TOKEN"} {
		if !strings.Contains(rep.Error, setting) {
			t.Errorf("inbox_disabled message %q does not name %s", rep.Error, setting)
		}
	}

	genuine := []byte(`{"order":42,"amount":"genuine"}`)
	pub.mustPublish(topic, genuine, "ce-id", "order-42")
	waitStreamSettled(t, redis, topic, 1)
	if got := bodiesOf(rc, "order-42"); len(got) != 1 || got[0] != string(genuine) || rc.count() != 1 {
		t.Fatalf("webhook got %q (%d requests), want only the genuine %s", got, rc.count(), genuine)
	}
}

// TestInboxSignatureRules: with a webhook secret the inbox verifies the
// Standard Webhooks signature the way the spec says — webhook-id,
// webhook-timestamp within ±5 minutes, any one of several space-separated
// v1 entries — and binds it to the topic: a signature for another topic's
// inbox, or a captured delivery signed for a service, does not verify.
func TestInboxSignatureRules(t *testing.T) {
	redis := redistest.StartProcess(t)
	billing := redistest.UniqueTopic(t, "billing")
	alerts := redistest.UniqueTopic(t, "alerts")
	rc := newReceiver(t)
	cal := startSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_WEBHOOK_SECRET="+secret,
		"SIDECAR_CONFIG="+subscriberConfig(t, billing, rc.url(), "    concurrency: 1"))

	now := time.Now().Unix()
	key := inboxKey(t, billing)
	wrong := sigWith(key, "someone-else", now, []byte("other"))
	for _, tc := range []struct {
		name     string
		post     func(id string, body []byte) inboxPost
		want     int
		wantCode string
		wantMsg  string // in the error message
	}{
		{"correctly signed", func(id string, b []byte) inboxPost { return signed(t, billing, id, b) }, 202, "", ""},
		{"unsigned", func(id string, b []byte) inboxPost {
			return inboxPost{webhookID: id, ceID: id, ts: now, body: b}
		}, 401, "bad_signature", "webhook-signature"},
		{"timestamp 4 minutes old", func(id string, b []byte) inboxPost {
			ts := now - 4*60
			return inboxPost{webhookID: id, ceID: id, ts: ts, sig: sigWith(key, id, ts, b), body: b}
		}, 202, "", ""},
		{"timestamp 1 hour old", func(id string, b []byte) inboxPost {
			ts := now - 3600
			return inboxPost{webhookID: id, ceID: id, ts: ts, sig: sigWith(key, id, ts, b), body: b}
		}, 401, "bad_signature", "too old"},
		{"timestamp 1 year old", func(id string, b []byte) inboxPost {
			ts := now - 365*24*3600
			return inboxPost{webhookID: id, ceID: id, ts: ts, sig: sigWith(key, id, ts, b), body: b}
		}, 401, "bad_signature", "too old"},
		{"timestamp 1 hour ahead", func(id string, b []byte) inboxPost {
			ts := now + 3600
			return inboxPost{webhookID: id, ceID: id, ts: ts, sig: sigWith(key, id, ts, b), body: b}
		}, 401, "bad_signature", "too new"},
		{"signed for another topic's inbox", func(id string, b []byte) inboxPost {
			return inboxPost{webhookID: id, ceID: id, ts: now, sig: sigWith(inboxKey(t, alerts), id, now, b), body: b}
		}, 401, "bad_signature", ""},
		{"signed with the webhook key (a captured delivery to a service)", func(id string, b []byte) inboxPost {
			return inboxPost{webhookID: id, ceID: id, ts: now, sig: sigWith(rawKey(t), id, now, b), body: b}
		}, 401, "bad_signature", ""},
		{"key rotation: v1,<wrong> v1,<right>", func(id string, b []byte) inboxPost {
			return inboxPost{webhookID: id, ceID: id, ts: now, sig: wrong + " " + sigWith(key, id, now, b), body: b}
		}, 202, "", ""},
		{"other versions ignored: v2,<right>", func(id string, b []byte) inboxPost {
			return inboxPost{webhookID: id, ceID: id, ts: now, sig: "v2," + strings.TrimPrefix(sigWith(key, id, now, b), "v1,"), body: b}
		}, 401, "bad_signature", ""},
		{"v2,<x> v1,<right>", func(id string, b []byte) inboxPost {
			return inboxPost{webhookID: id, ceID: id, ts: now, sig: "v2,AAAA " + sigWith(key, id, now, b), body: b}
		}, 202, "", ""},
		{"body changed", func(id string, b []byte) inboxPost {
			p := signed(t, billing, id, b)
			p.body = append([]byte(nil), b...)
			p.body[len(p.body)-2] = 'X'
			return p
		}, 401, "bad_signature", ""},
		// The signature covers webhook-id, the timestamp and the body, not
		// ce-id: a ce-id other than the signed webhook-id is refused, or a
		// captured delivery could be replayed as any event id.
		{"ce-id differs from the signed webhook-id", func(id string, b []byte) inboxPost {
			p := signed(t, billing, id, b)
			p.ceID = id + "-other"
			return p
		}, 401, "bad_signature", "webhook-id"},
		{"webhook-id changed after signing", func(id string, b []byte) inboxPost {
			p := signed(t, billing, id, b)
			p.webhookID, p.ceID = id+"-other", id+"-other"
			return p
		}, 401, "bad_signature", ""},
		{"signed webhook-id, no ce-id", func(id string, b []byte) inboxPost {
			p := signed(t, billing, id, b)
			p.ceID = ""
			return p
		}, 202, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "sig-" + strings.NewReplacer(" ", "-", ",", "", "<", "", ">", "", ":", "", "(", "", ")", "", "'", "").Replace(tc.name)
			body := fmt.Appendf(nil, `{"case":%q}`, tc.name)
			code, rep := tc.post(id, body).send(t, cal, billing)
			t.Logf("measured: %s → %d %s %s", tc.name, code, rep.Code, rep.Error)
			if code != tc.want || rep.Code != tc.wantCode {
				t.Fatalf("got %d %+v, want %d %q", code, rep, tc.want, tc.wantCode)
			}
			if !strings.Contains(rep.Error, tc.wantMsg) {
				t.Fatalf("error message %q does not say %q", rep.Error, tc.wantMsg)
			}
			if tc.want == http.StatusAccepted {
				// Concurrency 1: the inbox delivers in arrival order, so once
				// this one arrives, anything accepted before it has too.
				eventually.True(t, 10*time.Second, id+" delivered", func() bool { return len(bodiesOf(rc, id)) == 1 })
			}
		})
	}
	// A last accepted post: everything the inbox took before it is delivered
	// by the time it is.
	code, _ := signed(t, billing, "sig-last", []byte(`{"case":"last"}`)).send(t, cal, billing)
	if code != http.StatusAccepted {
		t.Fatalf("last signed post: got %d", code)
	}
	eventually.True(t, 10*time.Second, "last delivered", func() bool { return len(bodiesOf(rc, "sig-last")) == 1 })
	var got []string
	for _, r := range rc.all() {
		got = append(got, r.Header.Get("webhook-id"))
	}
	want := []string{"sig-correctly-signed", "sig-timestamp-4-minutes-old", "sig-key-rotation-v1wrong-v1right",
		"sig-v2x-v1right", "sig-signed-webhook-id-no-ce-id", "sig-last"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("webhook got %v, want exactly the accepted posts %v", got, want)
	}
}

// TestInboxForgedIDDoesNotSuppressTheGenuineEvent: even an authenticated
// peer that posts "order-42" with a forged body cannot make the sidecar
// drop the genuine order-42 that arrives through the stream: the ledger
// remembers what was delivered (topic, id, source, data), not just the id.
func TestInboxForgedIDDoesNotSuppressTheGenuineEvent(t *testing.T) {
	redis, topic, rc, pub, cal := startPair(t, "inbox-forged", "SIDECAR_WEBHOOK_SECRET="+secret)
	forged := []byte(`{"order":42,"amount":"forged"}`)
	if code, rep := signed(t, topic, "order-42", forged).send(t, cal, topic); code != http.StatusAccepted {
		t.Fatalf("authenticated inbox post: got %d %+v, want 202", code, rep)
	}
	eventually.True(t, 10*time.Second, "forged post delivered", func() bool { return len(bodiesOf(rc, "order-42")) == 1 })

	genuine := []byte(`{"order":42,"amount":"genuine"}`)
	pub.mustPublish(topic, genuine, "ce-id", "order-42")
	waitStreamSettled(t, redis, topic, 1)
	got := bodiesOf(rc, "order-42")
	t.Logf("measured: webhook got %d deliveries with webhook-id order-42: %q", len(got), got)
	if len(got) != 2 || got[0] != string(forged) || got[1] != string(genuine) {
		t.Fatalf("webhook got %q, want the forged body then the genuine %s (not suppressed)", got, genuine)
	}
}

// TestInboxAPITokenAuthenticates: with only api_token set the inbox takes
// a bearer token; with both set, either proves the sender.
func TestInboxAPITokenAuthenticates(t *testing.T) {
	const token = "inbox-test-token-0123456789"
	redis := redistest.StartProcess(t)
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{name: "token only", env: []string{"SIDECAR_API_TOKEN=" + token}},
		{name: "token and secret", env: []string{"SIDECAR_API_TOKEN=" + token, "SIDECAR_WEBHOOK_SECRET=" + secret}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			topic := redistest.UniqueTopic(t, "inbox-token")
			rc := newReceiver(t)
			cal := startSidecar(t, "calendar", append([]string{"REDIS_URL=" + redis.URL,
				"SIDECAR_CONFIG=" + subscriberConfig(t, topic, rc.url(), "    concurrency: 1")}, tc.env...)...)
			withSecret := len(tc.env) == 2
			unsigned := func(id string, b []byte) inboxPost {
				return inboxPost{webhookID: id, ceID: id, ts: time.Now().Unix(), body: b}
			}
			var accepted []string
			for _, p := range []struct {
				name     string
				post     inboxPost
				want     int
				wantCode string
			}{
				{"bearer token", func() inboxPost { p := unsigned("tok-ok", []byte(`{"t":1}`)); p.auth = "Bearer " + token; return p }(), 202, ""},
				{"no token", unsigned("tok-none", []byte(`{"t":2}`)), 401, map[bool]string{false: "unauthorized", true: "bad_signature"}[withSecret]},
				{"wrong token", func() inboxPost { p := unsigned("tok-wrong", []byte(`{"t":3}`)); p.auth = "Bearer nope"; return p }(), 401, "unauthorized"},
				{"wrong token, bad signature", func() inboxPost {
					p := signed(t, topic+"x", "tok-badsig", []byte(`{"t":4}`))
					p.auth = "Bearer nope"
					return p
				}(), 401, map[bool]string{false: "unauthorized", true: "bad_signature"}[withSecret]},
				{"valid signature, no token", signed(t, topic, "tok-sig", []byte(`{"t":5}`)),
					map[bool]int{false: 401, true: 202}[withSecret], map[bool]string{false: "unauthorized", true: ""}[withSecret]},
			} {
				code, rep := p.post.send(t, cal, topic)
				t.Logf("measured: %s: %s → %d %s %s", tc.name, p.name, code, rep.Code, rep.Error)
				if code != p.want || rep.Code != p.wantCode {
					t.Errorf("%s: got %d %+v, want %d %q", p.name, code, rep, p.want, p.wantCode)
				}
				if code == http.StatusAccepted {
					accepted = append(accepted, p.post.webhookID)
				}
			}
			if len(accepted) == 0 {
				t.Fatal("no post was accepted")
			}
			last := accepted[len(accepted)-1]
			eventually.True(t, 10*time.Second, "accepted posts delivered", func() bool { return len(bodiesOf(rc, last)) == 1 })
			if got := fmt.Sprint(ids(rc.all())); got != fmt.Sprint(accepted) {
				t.Fatalf("webhook got %s, want exactly the accepted %v", got, accepted)
			}
		})
	}
}

// TestSignedFallbackOfAnUnsafeIDIsDeliveredOnce: a real publisher's
// fallback to a real subscriber's inbox, for an event id that travels
// percent-encoded in ce-id and hashed in webhook-id: the inbox verifies it
// and delivers it, and the stream copy that arrives when Redis returns is
// recognised as the same event and not delivered again.
func TestSignedFallbackOfAnUnsafeIDIsDeliveredOnce(t *testing.T) {
	redis, topic, rc, pub, _ := startFallbackPair(t, "inbox-unsafe-id")
	warm := pub.mustPublish(topic, []byte(`{"warm":1}`))
	eventually.True(t, 10*time.Second, "warm-up delivered", func() bool { return rc.count() == 1 })
	redis.Kill()

	const id = "match 42/round 7 100%"
	code, r := pub.post("/sync", []byte(`{"match":42}`), "ce-id", id)
	if code != http.StatusAccepted || !r.Spooled || r.Fallback != "delivered" || r.ID != id {
		t.Fatalf("route publish with Redis dead: got %d %+v, want spooled, fallback delivered, id %q", code, r, id)
	}
	eventually.True(t, 5*time.Second, "fallback delivered", func() bool { return rc.count() == 2 })
	webhookID := rc.all()[1].Header.Get("webhook-id")
	redis.Restart() // empty: the spool drains the one event into a new stream
	waitStreamSettled(t, redis, topic, 1)
	got := ids(rc.all())
	t.Logf("measured: event %q (webhook-id %s) via the signed fallback, then its stream copy: webhook saw %d requests %v", id, webhookID, len(got), got)
	if len(got) != 2 || got[0] != warm.ID || got[1] != webhookID || webhookID == "" {
		t.Fatalf("webhook got %v, want the warm-up and the fallback event once each", got)
	}
}

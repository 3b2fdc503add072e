package resp

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
)

// processorScript publishes like the FOGIS match-list-processor
// (connection_manager.py, publisher.py): from_url with decode_responses
// only, PING, then PUBLISH of json.dumps(envelope, ensure_ascii=False); it
// prints each reply.
const processorScript = `
import json, sys, uuid, redis
url, channel, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = redis.from_url(url, decode_responses=True)
client.ping()
for i in range(n):
    msg = {"message_id": str(uuid.uuid4()), "timestamp": "2025-10-17T10:40:10.123456Z",
           "source": "match-list-processor", "version": "1.0", "type": "match_updates",
           "payload": {"matches": [{"matchid": 6169105 + i, "lag1namn": "Örgryte IS"}],
                       "schema_version": "2.0", "metadata": {"has_changes": True}}}
    print(json.dumps({"reply": client.publish(channel, json.dumps(msg, ensure_ascii=False)),
                      "message_id": msg["message_id"]}), flush=True)
`

// calendarScript subscribes like the FOGIS calendar (subscriber.py): the
// same client options, PING, pubsub(), one SUBSCRIBE per channel, then it
// prints each message's channel and data until it has n. The health check
// runs every second (the calendar's is 30 s), and the script pauses past
// it, so "PING redis-py-health-check" is answered while subscribed.
const calendarScript = `
import json, socket, sys, time, redis
url, channels, n = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
client = redis.from_url(url, socket_timeout=None, socket_connect_timeout=5, socket_keepalive=True,
                        health_check_interval=1, decode_responses=True)
client.ping()
pubsub = client.pubsub()
for ch in channels:
    pubsub.subscribe(ch)
got = 0
while got < len(channels):
    m = pubsub.get_message(timeout=5)
    if m is None:
        sys.exit("no subscribe confirmation")
    if m["type"] != "subscribe":
        print(json.dumps({"unexpected": str(m)}), flush=True)
        continue
    got += 1
print(json.dumps({"ready": True}), flush=True)
time.sleep(1.5)
got = 0
deadline = time.time() + 30
while got < n and time.time() < deadline:
    m = pubsub.get_message(timeout=0.5)
    if m is None:
        continue
    if m["type"] == "message":
        got += 1
        print(json.dumps({"channel": m["channel"], "data": m["data"]}), flush=True)
    else:
        print(json.dumps({"unexpected": str(m)}), flush=True)
time.sleep(1.5)
m = pubsub.get_message(timeout=0.2)
if m is not None:
    print(json.dumps({"unexpected": str(m)}), flush=True)
pubsub.close()
client.close()
`

type pyLine struct {
	Reply      int64  `json:"reply"`
	MessageID  string `json:"message_id"`
	Channel    string `json:"channel"`
	Data       string `json:"data"`
	Ready      bool   `json:"ready"`
	Unexpected string `json:"unexpected"`
}

func parseLine(t *testing.T, l string) pyLine {
	t.Helper()
	var p pyLine
	if err := json.Unmarshal([]byte(l), &p); err != nil {
		t.Fatalf("script printed %q: %v", l, err)
	}
	if p.Unexpected != "" {
		t.Fatalf("redis-py returned an unexpected message: %s", p.Unexpected)
	}
	return p
}

// TestRedisPy drives the ingress with redis-py exactly as the FOGIS
// processor and calendar do (redis-py ≥ 5 handshakes with CLIENT SETINFO,
// ≥ 8 with HELLO 3 and CLIENT MAINT_NOTIFICATIONS): the processor's
// PUBLISH lands in the stream with its message_id; the calendar's five
// SUBSCRIBE commands receive it; what is published while the calendar is
// away arrives, in order, when it subscribes again.
func TestRedisPy(t *testing.T) {
	for _, py := range pythons(t) {
		t.Run(py.name, func(t *testing.T) {
			f := start(t, fixtureOpts{})
			url := "redis://" + f.addr
			base := newTopic(t, "fogis")
			updates := base + ".matches.updates"
			chans := strings.Join([]string{base + ".updates.v2", base + ".updates.v1", updates, base + ".status", base + ".alerts"}, ",")

			publish := func(n int) []string {
				t.Helper()
				lines, wait := py.start(t, processorScript, url, updates, fmt.Sprint(n))
				var ids []string
				for i := 0; i < n; i++ {
					p := parseLine(t, next(t, lines, 20*time.Second, "processor publish"))
					if p.Reply != 1 {
						t.Errorf("PUBLISH reply: got %d, want 1", p.Reply)
					}
					ids = append(ids, p.MessageID)
				}
				if err := wait(); err != nil {
					t.Fatalf("processor script: %v", err)
				}
				return ids
			}
			ids := publish(1)
			evs := f.entries(t, updates)
			if len(evs) != 1 || evs[0].ID != ids[0] || evs[0].Type != "match_updates" || evs[0].ContentType != "application/json" ||
				!strings.Contains(string(evs[0].Data), `"lag1namn": "Örgryte IS"`) {
				t.Fatalf("stream after the processor's PUBLISH: got %+v, want the envelope with id %s", evs, ids)
			}

			// The calendar: receives the event published before it first
			// subscribed (a new group starts at the beginning) and one after.
			lines, wait := py.start(t, calendarScript, url, chans, "2")
			if !parseLine(t, next(t, lines, 20*time.Second, "calendar subscribed")).Ready {
				t.Fatal("calendar script: want ready first")
			}
			ids = append(ids, publish(1)...)
			for i := 0; i < 2; i++ {
				p := parseLine(t, next(t, lines, 20*time.Second, "calendar message"))
				var env struct {
					MessageID string `json:"message_id"`
				}
				_ = json.Unmarshal([]byte(p.Data), &env)
				if p.Channel != updates || env.MessageID != ids[i] {
					t.Errorf("calendar message %d: got %s %s, want %s %s", i, p.Channel, env.MessageID, updates, ids[i])
				}
			}
			if err := wait(); err != nil {
				t.Fatalf("calendar script: %v", err)
			}

			// The calendar is gone: three updates; it comes back and gets them in order.
			eventually.True(t, 10*time.Second, "the feed to stop", func() bool { return !f.srv.hub.feeding(updates) })
			away := publish(3)
			lines, wait = py.start(t, calendarScript, url, chans, "3")
			parseLine(t, next(t, lines, 20*time.Second, "calendar subscribed again"))
			for i := 0; i < 3; i++ {
				p := parseLine(t, next(t, lines, 20*time.Second, "calendar message after reconnect"))
				if !strings.Contains(p.Data, away[i]) {
					t.Errorf("message %d after reconnect: got %.80s…, want message_id %s", i, p.Data, away[i])
				}
			}
			if err := wait(); err != nil {
				t.Fatalf("calendar script: %v", err)
			}
		})
	}
}

// authScript connects with the password in the URL, as redis-py does
// for REDIS_URL=redis://:token@host:port (AUTH, or HELLO 3 AUTH in 8.x),
// and publishes; a wrong password must fail the connection (redis-py 4
// raises ResponseError for WRONGPASS, later versions AuthenticationError —
// as against a real Redis).
const authScript = `
import sys, redis
client = redis.from_url(sys.argv[1], decode_responses=True, health_check_interval=1)
try:
    client.ping()
except redis.exceptions.RedisError as e:
    print("refused:", str(e).removeprefix("WRONGPASS "), flush=True)
    sys.exit(0)
print("published", client.publish(sys.argv[2], "x"), flush=True)
`

// TestRedisPyAuth: with a token set, redis-py authenticates with it as the
// URL's password; a wrong one is refused.
func TestRedisPyAuth(t *testing.T) {
	for _, py := range pythons(t) {
		t.Run(py.name, func(t *testing.T) {
			f := start(t, fixtureOpts{token: "s3cret"})
			for _, tc := range []struct{ url, want string }{
				{"redis://:s3cret@" + f.addr, "published 1"},
				{"redis://default:s3cret@" + f.addr + "/0", "published 1"},
				{"redis://:wrong@" + f.addr, "refused: invalid username-password pair or user is disabled."},
			} {
				lines, wait := py.start(t, authScript, tc.url, newTopic(t, "auth"))
				if got := next(t, lines, 20*time.Second, tc.url); got != tc.want {
					t.Errorf("%s: got %q, want %q", tc.url, got, tc.want)
				}
				if err := wait(); err != nil {
					t.Errorf("%s: %v", tc.url, err)
				}
			}
		})
	}
}

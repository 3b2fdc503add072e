package httpbridge

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/event"
)

func TestPointerExtract(t *testing.T) {
	// The FOGIS envelope, with the odd spacing and number formatting a
	// re-encoding would lose.
	envelope := `{"message_id":"m-1","type":"match_updates","payload" : {"matches": [ {"matchid": 6170000, "ratio": 1.50} ], "schema_version":"2.0"} }`
	odd := `{"a/b":1,"m~n":2,"~1":3,"":4,"caf\u00e9":5,"arr":[10,[20,21],{"x":null}],"s":"str","n":null,"t":true}`
	for _, tc := range []struct {
		name, ptr, doc string
		want           string // exact bytes
		wantErr        string // exact error text
	}{
		{name: "empty pointer: whole event, JSON or not", ptr: "", doc: "not json", want: "not json"},
		{name: "payload bytes preserved", ptr: "/payload", doc: envelope,
			want: `{"matches": [ {"matchid": 6170000, "ratio": 1.50} ], "schema_version":"2.0"}`},
		{name: "nested member", ptr: "/payload/matches", doc: envelope, want: `[ {"matchid": 6170000, "ratio": 1.50} ]`},
		{name: "array index", ptr: "/payload/matches/0/matchid", doc: envelope, want: `6170000`},
		{name: "number formatting kept", ptr: "/payload/matches/0/ratio", doc: envelope, want: `1.50`},
		{name: "~1 is /", ptr: "/a~1b", doc: odd, want: `1`},
		{name: "~0 is ~", ptr: "/m~0n", doc: odd, want: `2`},
		{name: "~01 is ~1, not /", ptr: "/~01", doc: odd, want: `3`},
		{name: "/ names the empty key", ptr: "/", doc: odd, want: `4`},
		{name: "keys compared unescaped", ptr: "/café", doc: odd, want: `5`},
		{name: "array in array", ptr: "/arr/1/0", doc: odd, want: `20`},
		{name: "null member", ptr: "/arr/2/x", doc: odd, want: `null`},
		{name: "string member keeps its quotes", ptr: "/s", doc: odd, want: `"str"`},
		{name: "whitespace around the document", ptr: "/s", doc: " \n\t{\"s\" :  \"v\" }\n", want: `"v"`},

		{name: "not JSON", ptr: "/payload", doc: "hello", wantErr: "body /payload: event is not JSON"},
		{name: "empty event", ptr: "/payload", doc: "", wantErr: "body /payload: event is not JSON (it is empty)"},
		{name: "truncated JSON", ptr: "/payload", doc: `{"payload":`, wantErr: "body /payload: event is not JSON"},
		{name: "missing member", ptr: "/payload", doc: `{"type":"x"}`, wantErr: `body /payload: no member "payload"`},
		{name: "missing nested member", ptr: "/payload/matches", doc: `{"payload":{}}`, wantErr: `body /payload/matches: no member "matches" in /payload`},
		{name: "member of a string", ptr: "/s/x", doc: odd, wantErr: `body /s/x: no member "x": /s is a string, not an object or array`},
		{name: "member of null", ptr: "/n/x", doc: odd, wantErr: `body /n/x: no member "x": /n is null, not an object or array`},
		{name: "event is a scalar", ptr: "/payload", doc: `42`, wantErr: `body /payload: no member "payload": the event is a number, not an object or array`},
		{name: "index out of range", ptr: "/arr/3", doc: odd, wantErr: `body /arr/3: no element 3 in /arr (array of 3)`},
		{name: "leading zero", ptr: "/arr/01", doc: odd, wantErr: `body /arr/01: "01" is not an array index in /arr`},
		{name: "not a number", ptr: "/arr/x", doc: odd, wantErr: `body /arr/x: "x" is not an array index in /arr`},
		{name: "dash", ptr: "/arr/-", doc: odd, wantErr: `body /arr/-: no element "-" (it names the end of an array) in /arr`},
		{name: "no leading slash", ptr: "payload", doc: envelope, wantErr: `body payload: "payload" is not a JSON Pointer: it must be empty or start with / (e.g. /payload)`},
		{name: "bad escape", ptr: "/a~2", doc: odd, wantErr: `body /a~2: "/a~2" is not a JSON Pointer: ~ must be followed by 0 (for ~) or 1 (for /)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Pointer(tc.ptr).Extract([]byte(tc.doc))
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("got %q, %v; want error %q", got, err, tc.wantErr)
				}
				var be *BodyError
				if !errors.As(err, &be) || !backoff.Permanent(err) {
					t.Fatalf("error %v: got a %T, want a permanent *BodyError", err, err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestDeliverBodyPointer: the webhook receives the member's bytes as
// application/json, signed as sent; the other headers describe the event.
func TestDeliverBodyPointer(t *testing.T) {
	data := `{"message_id":"m-1","type":"match_updates","payload":{"matches": [{"matchid":1}]}}`
	want := `{"matches": [{"matchid":1}]}`
	ev := &event.Event{ID: "01ABC", Source: "processor", Type: "match.updated", Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		ContentType: "application/octet-stream", Data: []byte(data)}
	var got *http.Request
	var gotBody []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, gotBody = r, must(io.ReadAll(r.Body))
	}))
	defer srv.Close()
	key := []byte("0123456789abcdef0123")
	now := time.Unix(1700000000, 0)
	wh := &Webhook{URL: srv.URL + "/manual-sync", Timeout: time.Second, Secret: key, Body: "/payload", Client: srv.Client(), Now: func() time.Time { return now }}
	if err := wh.Deliver(context.Background(), "match.updated", 1, ev); err != nil {
		t.Fatal(err)
	}
	if string(gotBody) != want {
		t.Fatalf("body: got %q, want %q", gotBody, want)
	}
	for h, v := range map[string]string{
		"Content-Type": "application/json", "ce-id": "01ABC", "ce-type": "match.updated", "webhook-id": "01ABC",
		"webhook-signature": Sign(key, "01ABC", now.Unix(), []byte(want)),
	} {
		if g := got.Header.Get(h); g != v {
			t.Errorf("header %s: got %q, want %q", h, g, v)
		}
	}
	if string(ev.Data) != data || ev.ContentType != "application/octet-stream" {
		t.Fatalf("the event was modified: %q %q", ev.Data, ev.ContentType)
	}
}

// TestDeliverBodyPointerFailsPermanently: an event without the member is
// never sent, and the failure is permanent (DLQ at once, reason in error).
func TestDeliverBodyPointerFailsPermanently(t *testing.T) {
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { requests++ }))
	defer srv.Close()
	wh := &Webhook{URL: srv.URL, Timeout: time.Second, Body: "/payload", Client: srv.Client()}
	for _, tc := range []struct{ name, data, want string }{
		{"not JSON", "plain text", "body /payload: event is not JSON"},
		{"no member", `{"type":"system_alert"}`, `body /payload: no member "payload"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := wh.Deliver(context.Background(), "t", 1, &event.Event{ID: "e", ContentType: "text/plain", Data: []byte(tc.data)})
			if err == nil || err.Error() != tc.want || !backoff.Permanent(err) {
				t.Fatalf("got %v (permanent %v), want permanent %q", err, backoff.Permanent(err), tc.want)
			}
		})
	}
	if requests != 0 {
		t.Fatalf("got %d requests, want none", requests)
	}
}

package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

func TestParseCloudEventsBatch(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ok := func(id string) string {
		return `{"specversion":"1.0","id":"` + id + `","type":"t","data":{"n":"` + id + `"}}`
	}
	for _, tc := range []struct {
		name      string
		body      string
		maxEvents int
		maxData   int
		wantIDs   []string // on success
		wantCode  string
		wantIndex int
		wantErr   string // in the error text
	}{
		{name: "two events in order", body: "[" + ok("b") + "," + ok("a") + "]", maxEvents: 2, wantIDs: []string{"b", "a"}},
		{name: "duplicate ids are allowed", body: " [" + ok("a") + ",\n" + ok("a") + "] ", wantIDs: []string{"a", "a"}},
		{name: "no limits", body: "[" + ok("a") + "]", wantIDs: []string{"a"}},
		{name: "data at the limit", body: `[{"specversion":"1.0","id":"a","type":"t","data_base64":"AAECAw=="}]`, maxData: 4, wantIDs: []string{"a"}},
		{name: "empty array", body: `[]`, wantCode: CodeEmptyBatch, wantIndex: -1, wantErr: "batch: no events"},
		{name: "object", body: ok("a"), wantCode: CodeMalformedBatch, wantIndex: -1, wantErr: "not a JSON object"},
		{name: "string", body: `"x"`, wantCode: CodeMalformedBatch, wantIndex: -1, wantErr: "not a JSON string"},
		{name: "null", body: `null`, wantCode: CodeMalformedBatch, wantIndex: -1, wantErr: "not null"},
		{name: "empty body", body: ``, wantCode: CodeMalformedBatch, wantIndex: -1},
		{name: "truncated", body: "[" + ok("a") + ",", wantCode: CodeMalformedBatch, wantIndex: -1},
		{name: "trailing garbage", body: "[" + ok("a") + "]x", wantCode: CodeMalformedBatch, wantIndex: -1},
		{name: "too many", body: "[" + ok("a") + "," + ok("b") + "," + ok("c") + "]", maxEvents: 2, wantCode: CodeTooManyEvents, wantIndex: -1, wantErr: "3 events; at most 2"},
		{name: "second event has no id", body: "[" + ok("a") + `,{"specversion":"1.0","type":"t"}]`, wantCode: CodeMalformedCloudEvent, wantIndex: 1, wantErr: "event 1: malformed CloudEvent: id is required"},
		{name: "an element is a number", body: `[1]`, wantCode: CodeMalformedCloudEvent, wantIndex: 0},
		{name: "an element is null", body: "[" + ok("a") + ",null]", wantCode: CodeMalformedCloudEvent, wantIndex: 1, wantErr: "must be a JSON object"},
		{name: "invalid UTF-8 in the third", body: "[" + ok("a") + "," + ok("b") + "," + ok("c\xff") + "]", wantCode: CodeMalformedCloudEvent, wantIndex: 2, wantErr: "not valid UTF-8"},
		{name: "bad specversion", body: `[{"specversion":"0.3","id":"a","type":"t"}]`, wantCode: CodeMalformedCloudEvent, wantIndex: 0, wantErr: "not supported"},
		{name: "decoded data over the limit", body: `[{"specversion":"1.0","id":"a","type":"t"},{"specversion":"1.0","id":"b","type":"t","data_base64":"AAECAwQ="}]`, maxData: 4, wantCode: CodeTooLarge, wantIndex: 1, wantErr: "data is 5 bytes; at most 4"},
		{name: "JSON data over the limit", body: `[{"specversion":"1.0","id":"a","type":"t","data":[1,2,3]}]`, maxData: 4, wantCode: CodeTooLarge, wantIndex: 0, wantErr: "data is 7 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := ParseCloudEventsBatch([]byte(tc.body), "svc", now, tc.maxEvents, tc.maxData)
			if tc.wantCode != "" {
				var be *BatchError
				if !errors.As(err, &be) || be.Code != tc.wantCode || be.Index != tc.wantIndex || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %#v (%v), want code %s index %d containing %q", err, err, tc.wantCode, tc.wantIndex, tc.wantErr)
				}
				if tc.wantCode == CodeMalformedCloudEvent && !errors.Is(err, ErrMalformedCloudEvent) {
					t.Fatalf("got %v, want it to wrap ErrMalformedCloudEvent", err)
				}
				if evs != nil {
					t.Fatalf("got %d events with the error, want none", len(evs))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != len(tc.wantIDs) {
				t.Fatalf("got %d events, want %d", len(evs), len(tc.wantIDs))
			}
			for i, e := range evs {
				if e.ID != tc.wantIDs[i] || e.Source != "svc" || !e.Time.Equal(now) || e.Type != "t" {
					t.Fatalf("event %d: got id %q source %q time %v, want %q svc %v", i, e.ID, e.Source, e.Time, tc.wantIDs[i], now)
				}
				if err := e.Validate(); err != nil {
					t.Fatalf("event %d: an accepted event fails Validate: %v", i, err)
				}
			}
		})
	}
}

func TestParseNDJSON(t *testing.T) {
	at := time.Date(2026, 5, 17, 13, 0, 0, 0, time.UTC)
	tmpl := Event{ID: "ignored", Source: "/shop", Type: "order.created", Subject: "Malmö", DataSchema: "https://shop.example/o.json",
		ContentType: "text/plain", Time: at, TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		IdempotencyKey: "K", Extensions: map[string]string{"partitionkey": "k1", "region": "Skåne"}}
	for _, tc := range []struct {
		name      string
		body      string
		maxEvents int
		maxData   int
		wantData  []string
		wantCode  string
		wantIndex int
		wantErr   string
	}{
		{name: "lines", body: "{\"a\": 1}\n[1, 2]\n\"s\"\n", maxEvents: 3, maxData: 8, wantData: []string{`{"a": 1}`, `[1, 2]`, `"s"`}},
		{name: "CRLF, blank lines, no final newline", body: "\r\n{\"a\":1}\r\n\n  \t \n 2 \r\n\ntrue", wantData: []string{`{"a":1}`, ` 2 `, `true`}},
		{name: "one line", body: `{}`, wantData: []string{`{}`}},
		{name: "empty body", body: ``, wantCode: CodeEmptyBatch, wantIndex: -1},
		{name: "only blank lines", body: "\n\r\n   \n", wantCode: CodeEmptyBatch, wantIndex: -1},
		{name: "second event not JSON", body: "{}\nnope\n{}", wantCode: CodeMalformedEvent, wantIndex: 1, wantErr: "event 1: line 2 is not JSON"},
		{name: "index counts events, not lines", body: "\n{}\n\n\n{\"a\":", wantCode: CodeMalformedEvent, wantIndex: 1, wantErr: "line 5"},
		{name: "two values on a line", body: "{} {}", wantCode: CodeMalformedEvent, wantIndex: 0},
		{name: "invalid UTF-8", body: "{}\n\"\xff\"", wantCode: CodeMalformedEvent, wantIndex: 1},
		{name: "too many", body: "1\n2\n3\n", maxEvents: 2, wantCode: CodeTooManyEvents, wantIndex: -1, wantErr: "more than 2 events"},
		{name: "exactly the limit", body: "1\n2\n", maxEvents: 2, wantData: []string{"1", "2"}},
		{name: "too large", body: "1\n\"0123456789\"\n", maxData: 10, wantCode: CodeTooLarge, wantIndex: 1, wantErr: "data is 12 bytes; at most 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			evs, err := ParseNDJSON(body, tmpl, tc.maxEvents, tc.maxData)
			if tc.wantCode != "" {
				var be *BatchError
				if !errors.As(err, &be) || be.Code != tc.wantCode || be.Index != tc.wantIndex || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want code %s index %d containing %q", err, tc.wantCode, tc.wantIndex, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != len(tc.wantData) {
				t.Fatalf("got %d events, want %d", len(evs), len(tc.wantData))
			}
			ids := map[string]bool{}
			for i, e := range evs {
				if string(e.Data) != tc.wantData[i] {
					t.Fatalf("event %d: got data %q, want %q", i, e.Data, tc.wantData[i])
				}
				if _, err := ulid.ParseStrict(e.ID); err != nil || ids[e.ID] {
					t.Fatalf("event %d: id %q is not a fresh ULID (%v)", i, e.ID, err)
				}
				ids[e.ID] = true
				want := tmpl
				want.ID, want.Data, want.ContentType, want.IdempotencyKey = e.ID, e.Data, "application/json", ""
				sameEvent(t, e, &want)
				if err := e.Validate(); err != nil {
					t.Fatalf("event %d fails Validate: %v", i, err)
				}
			}
			// Each event has its own extensions, and data that cannot grow
			// into the next event's (the body itself is handed over).
			evs[0].Extensions["region"] = "changed"
			if tmpl.Extensions["region"] != "Skåne" || (len(evs) > 1 && evs[1].Extensions["region"] != "Skåne") {
				t.Fatal("the events share an extensions map")
			}
			_ = append(evs[0].Data, 'X')
			for i, e := range evs {
				if string(e.Data) != tc.wantData[i] {
					t.Fatalf("event %d: data changed to %q after an append to another", i, e.Data)
				}
			}
		})
	}
}

// TestAppendStructuredRoundTrip: ParseStructuredCloudEvent reads back what
// AppendStructured writes: every attribute, and the data byte for byte.
func TestAppendStructuredRoundTrip(t *testing.T) {
	at := time.Date(2026, 5, 17, 13, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	for _, tc := range []struct {
		name     string
		ev       Event
		wantData string // "" = ev.Data
		wantKind string // "data", "data_base64" or "" (no data member)
	}{
		{name: "JSON with inner whitespace", ev: Event{ContentType: "application/json", Data: []byte("{ \"a\" :\n\t[1,  2],\"s\":\"<&>\\u00e9\" }")}, wantKind: "data"},
		{name: "JSON string", ev: Event{ContentType: "application/json; charset=utf-8", Data: []byte(`"hi"`)}, wantKind: "data"},
		{name: "+json", ev: Event{ContentType: "application/vnd.shop+json", Data: []byte(`[true,null]`)}, wantKind: "data"},
		{name: "text", ev: Event{ContentType: "text/plain", Data: []byte("hej då")}, wantKind: "data_base64"},
		{name: "binary", ev: Event{ContentType: "application/octet-stream", Data: []byte{0, 1, 0xff, '"'}}, wantKind: "data_base64"},
		{name: "JSON type, not JSON", ev: Event{ContentType: "application/json", Data: []byte(`{oops`)}, wantKind: "data_base64"},
		{name: "JSON type, invalid UTF-8", ev: Event{ContentType: "application/json", Data: []byte("\"\xff\"")}, wantKind: "data_base64"},
		{name: "JSON null", ev: Event{ContentType: "application/json", Data: []byte(`null`)}, wantKind: "data_base64"},
		{name: "empty JSON", ev: Event{ContentType: "application/json", Data: []byte{}}},
		{name: "empty binary", ev: Event{ContentType: "application/octet-stream"}},
		// The one loss the JSON format imposes: whitespace around a value.
		{name: "JSON with a trailing newline", ev: Event{ContentType: "application/json", Data: []byte("{\"a\":1}\n")}, wantData: `{"a":1}`, wantKind: "data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := tc.ev
			ev.ID, ev.Source, ev.Type, ev.Time = `ordre-ö."1"\`, "https://shop.example/a b", "order.created", at
			ev.Subject = "Malmö \"C\" <&>\ttab \u2028"
			ev.DataSchema = "https://shop.example/order.json"
			ev.Extensions = map[string]string{"partitionkey": "kund-ö", "attempt": "3", "empty": "", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
			// The hop's trace context is not an attribute: not written.
			ev.TraceParent, ev.TraceState = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "a=1"
			if err := ev.Validate(); err != nil {
				t.Fatalf("test event is invalid: %v", err)
			}
			b := AppendStructured([]byte("prefix"), &ev)
			if !bytes.HasPrefix(b, []byte("prefix")) {
				t.Fatal("AppendStructured dropped what b held")
			}
			b = b[len("prefix"):]
			var members map[string]any
			if err := json.Unmarshal(b, &members); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, b)
			}
			_, hasData := members["data"]
			_, hasB64 := members["data_base64"]
			if kind := map[[2]bool]string{{true, false}: "data", {false, true}: "data_base64"}[[2]bool{hasData, hasB64}]; kind != tc.wantKind {
				t.Fatalf("data member: got %q, want %q\n%s", kind, tc.wantKind, b)
			}
			if members["time"] != "2026-05-17T11:00:00.123456789Z" || members["specversion"] != "1.0" || members["partitionkey"] != "kund-ö" || members["attempt"] != "3" {
				t.Fatalf("members: got %v", members)
			}
			got, err := ParseStructuredCloudEvent(b, "default", time.Time{})
			if err != nil {
				t.Fatalf("ParseStructuredCloudEvent: %v\n%s", err, b)
			}
			want := ev
			want.TraceParent, want.TraceState = "", ""
			if tc.wantData != "" {
				want.Data = []byte(tc.wantData)
			}
			sameEvent(t, got, &want)
		})
	}
}

func TestAppendStructuredExactBytes(t *testing.T) {
	ev := &Event{ID: "01ABC", Source: "processor", Type: "t", Time: time.Unix(1700000000, 5).UTC(), ContentType: "application/json",
		Data: []byte(`{"a": 1}`), Extensions: map[string]string{"region": "x", "partitionkey": "k"}}
	got := string(AppendStructured(nil, ev))
	want := `{"specversion":"1.0","id":"01ABC","source":"processor","type":"t","time":"2023-11-14T22:13:20.000000005Z",` +
		`"datacontenttype":"application/json","partitionkey":"k","region":"x","data":{"a": 1}}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// A string no validated event holds still makes valid JSON.
	odd := &Event{ID: "a\x00b\xffc", Source: "s", Type: "t\x1f", ContentType: "text/plain", Data: []byte("x")}
	if b := AppendStructured(nil, odd); !json.Valid(b) || !bytes.Contains(b, []byte(`"a\u0000b\ufffdc"`)) || !bytes.Contains(b, []byte(`"t\u001f"`)) {
		t.Fatalf("got %s", b)
	}
}

func TestAppendBatchRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	evs := []*Event{
		{ID: "1", Source: "s", Type: "t", Time: at, ContentType: "application/json", Data: []byte(`{"n":1}`), Extensions: map[string]string{"partitionkey": "k"}},
		{ID: "2", Source: "s", Type: "t", Time: at, ContentType: "text/plain", Data: []byte("two"), Subject: "sub"},
		{ID: "1", Source: "s", Type: "t", Time: at, ContentType: "application/octet-stream", Data: []byte{}},
	}
	b := AppendBatch(nil, evs)
	if !json.Valid(b) || b[0] != '[' || b[len(b)-1] != ']' {
		t.Fatalf("not a JSON array: %s", b)
	}
	var want []string
	for _, ev := range evs {
		want = append(want, string(AppendStructured(nil, ev)))
	}
	if string(b) != "["+strings.Join(want, ",")+"]" {
		t.Fatalf("got %s, want the structured events joined by commas in brackets", b)
	}
	got, err := ParseCloudEventsBatch(b, "default", time.Time{}, 3, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("got %d events, want %d", len(got), len(evs))
	}
	for i := range evs {
		sameEvent(t, got[i], evs[i])
	}
	if b := AppendBatch(nil, nil); string(b) != "[]" {
		t.Fatalf("empty batch: got %s, want []", b)
	}
}

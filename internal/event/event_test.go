package event

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidateTopic(t *testing.T) {
	for _, tc := range []struct {
		topic string
		ok    bool
	}{
		{"match.updated", true},
		{"a", true},
		{"A-b_c:d.9", true},
		{strings.Repeat("x", 200), true},
		{strings.Repeat("x", 201), false},
		{"", false},
		{".leading", false},
		{"has space", false},
		{"slash/no", false},
		{"brace{", false},
	} {
		t.Run(tc.topic, func(t *testing.T) {
			err := ValidateTopic(tc.topic)
			if got := err == nil; got != tc.ok {
				t.Fatalf("ValidateTopic(%q) ok = %v, want %v (err %v)", tc.topic, got, tc.ok, err)
			}
			if err != nil && !errors.Is(err, ErrInvalidTopic) {
				t.Fatalf("error %v does not wrap ErrInvalidTopic", err)
			}
		})
	}
}

func TestValuesRoundTrip(t *testing.T) {
	in := &Event{
		ID: NewID(), Source: "processor", Type: "match_updates",
		Time:        time.Date(2026, 11, 26, 4, 0, 0, 123456789, time.UTC),
		ContentType: "application/json", Data: []byte{0, 1, 2, '{', 0xff},
		Subject: "match/42", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		IdempotencyKey: "k1",
	}
	vals := in.Values()
	m := map[string]any{}
	for i := 0; i < len(vals); i += 2 {
		switch v := vals[i+1].(type) {
		case []byte:
			m[vals[i].(string)] = string(v)
		default:
			m[vals[i].(string)] = v
		}
	}
	out, err := FromValues(m)
	if err != nil {
		t.Fatal(err)
	}
	if string(out.Data) != string(in.Data) || out.ID != in.ID || !out.Time.Equal(in.Time) ||
		out.Subject != in.Subject || out.TraceParent != in.TraceParent || out.IdempotencyKey != in.IdempotencyKey ||
		out.Source != in.Source || out.Type != in.Type || out.ContentType != in.ContentType {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	if _, err := FromValues(map[string]any{}); !errors.Is(err, ErrNoData) {
		t.Fatalf("empty entry: got %v, want ErrNoData", err)
	}
}

func TestNewIDIsMonotonicULID(t *testing.T) {
	prev := ""
	for range 1000 {
		id := NewID()
		if len(id) != 26 {
			t.Fatalf("id %q: got length %d, want 26", id, len(id))
		}
		if id <= prev {
			t.Fatalf("ids not increasing: %q after %q", id, prev)
		}
		prev = id
	}
}

func TestParseStructuredCloudEvent(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name, body string
		wantErr    string
		wantData   string
		wantCT     string
		wantSource string
	}{
		{name: "json data", body: `{"specversion":"1.0","id":"e1","type":"t","source":"s","data":{"a":1}}`, wantData: `{"a":1}`, wantCT: "application/json", wantSource: "s"},
		{name: "default source", body: `{"specversion":"1.0","id":"e1","type":"t","data":[1]}`, wantData: `[1]`, wantCT: "application/json", wantSource: "svc"},
		{name: "text data", body: `{"specversion":"1.0","id":"e1","type":"t","datacontenttype":"text/plain","data":"hi"}`, wantData: `hi`, wantCT: "text/plain", wantSource: "svc"},
		{name: "base64", body: `{"specversion":"1.0","id":"e1","type":"t","data_base64":"AAEC"}`, wantData: "\x00\x01\x02", wantCT: DefaultContentType, wantSource: "svc"},
		{name: "no data", body: `{"specversion":"1.0","id":"e1","type":"t"}`, wantData: "", wantCT: DefaultContentType, wantSource: "svc"},
		{name: "missing id", body: `{"specversion":"1.0","type":"t"}`, wantErr: "id is required"},
		{name: "missing type", body: `{"specversion":"1.0","id":"x"}`, wantErr: "type is required"},
		{name: "missing specversion", body: `{"id":"x","type":"t"}`, wantErr: "specversion is required"},
		{name: "bad specversion", body: `{"specversion":"0.3","id":"x","type":"t"}`, wantErr: "not supported"},
		{name: "not json", body: `nope`, wantErr: "malformed"},
		{name: "bad time", body: `{"specversion":"1.0","id":"x","type":"t","time":"yesterday"}`, wantErr: "RFC 3339"},
		{name: "both data", body: `{"specversion":"1.0","id":"x","type":"t","data":1,"data_base64":"AA=="}`, wantErr: "mutually exclusive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseStructuredCloudEvent([]byte(tc.body), "svc", now)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrMalformedCloudEvent) {
					t.Fatalf("got err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(e.Data) != tc.wantData || e.ContentType != tc.wantCT || e.Source != tc.wantSource {
				t.Fatalf("got data %q ct %q source %q, want %q %q %q", e.Data, e.ContentType, e.Source, tc.wantData, tc.wantCT, tc.wantSource)
			}
			if e.ID != "e1" || e.Type != "t" || !e.Time.Equal(now) {
				t.Fatalf("got id %q type %q time %v", e.ID, e.Type, e.Time)
			}
		})
	}
	if !IsStructuredCloudEvent("application/cloudevents+json; charset=utf-8") || IsStructuredCloudEvent("application/json") {
		t.Fatal("IsStructuredCloudEvent misclassifies")
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	in := &Event{ID: NewID(), Source: "processor", Type: "match_updates", Time: time.Date(2026, 11, 26, 4, 0, 0, 123456789, time.UTC),
		ContentType: "application/json", Data: []byte{0, 1, 2, 0xff}, Subject: "s", TraceParent: "tp", IdempotencyKey: "k"}
	b := AppendBinary(nil, "match.updated", in)
	topic, out, err := DecodeBinary(b)
	if err != nil {
		t.Fatal(err)
	}
	if topic != "match.updated" || out.ID != in.ID || !out.Time.Equal(in.Time) || string(out.Data) != string(in.Data) ||
		out.Source != in.Source || out.Type != in.Type || out.ContentType != in.ContentType ||
		out.Subject != in.Subject || out.TraceParent != in.TraceParent || out.IdempotencyKey != in.IdempotencyKey {
		t.Fatalf("round trip: got %q %+v, want %+v", topic, out, in)
	}
	for i := range len(b) {
		if _, _, err := DecodeBinary(b[:i]); err == nil {
			t.Fatalf("decoding the first %d of %d bytes: got nil error", i, len(b))
		}
	}
	if _, _, err := DecodeBinary(append(b, 0)); err == nil {
		t.Fatal("trailing byte: got nil error")
	}
}

package event

import (
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
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
	sameEvent(t, out, in)
	if _, err := FromValues(map[string]any{}); !errors.Is(err, ErrNoData) {
		t.Fatalf("empty entry: got %v, want ErrNoData", err)
	}
}

// TestValuesCarryNewAttributes: dataschema, tracestate and each extension
// are entry fields (dataschema, tracestate, ext.<name>), in a fixed order;
// an entry without them (an older sidecar's) reads as before.
func TestValuesCarryNewAttributes(t *testing.T) {
	in := &Event{
		ID: "ordre-ö.1", Source: "/shop", Type: "order.created", Time: time.Date(2026, 5, 17, 13, 0, 0, 0, time.UTC),
		ContentType: "application/json", Data: []byte(`{}`), DataSchema: "https://shop.example/order.json",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", TraceState: "shop=1",
		Extensions: map[string]string{"urgent": "true", "attempt": "3", "region": "Skåne"},
	}
	vals := in.Values()
	var names []string
	m := map[string]any{}
	for i := 0; i < len(vals); i += 2 {
		names = append(names, vals[i].(string))
		switch v := vals[i+1].(type) {
		case []byte:
			m[vals[i].(string)] = string(v)
		default:
			m[vals[i].(string)] = v
		}
	}
	want := "id source type time content_type data traceparent dataschema tracestate ext.attempt ext.region ext.urgent"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("fields: got %s, want %s", got, want)
	}
	out, err := FromValues(m)
	if err != nil {
		t.Fatal(err)
	}
	sameEvent(t, out, in)

	old := map[string]any{"id": "01ABC", "source": "p", "type": "t", "time": "2026-01-01T00:00:00Z", "content_type": "text/plain", "data": "x"}
	out, err = FromValues(old)
	if err != nil || out.DataSchema != "" || out.TraceState != "" || out.Extensions != nil || out.ID != "01ABC" {
		t.Fatalf("an older entry: got %+v, %v", out, err)
	}
	// A field no sidecar writes, that cannot be a header name: the entry
	// is refused (dead-lettered with this reason), not delivered forever.
	old["ext.Bad Name"] = "x"
	if _, err := FromValues(old); err == nil || !strings.Contains(err.Error(), "ext.Bad Name") {
		t.Fatalf("bad extension field: got %v, want an error naming it", err)
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

// appendBinaryV1 is the record layout of the sidecar before version 2,
// copied from it: a spool written then must drain after an upgrade.
// sameEvent compares every field of two events.
func sameEvent(t *testing.T, got, want *Event) {
	t.Helper()
	if got.ID != want.ID || !got.Time.Equal(want.Time) || string(got.Data) != string(want.Data) ||
		got.Source != want.Source || got.Type != want.Type || got.ContentType != want.ContentType ||
		got.Subject != want.Subject || got.TraceParent != want.TraceParent || got.IdempotencyKey != want.IdempotencyKey ||
		got.DataSchema != want.DataSchema || got.TraceState != want.TraceState || !maps.Equal(got.Extensions, want.Extensions) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// TestValidateHeaderValueMatchesNetHTTP sends every byte, inside a header
// value, through a real http.Transport: ValidateHeaderValue must accept
// exactly what net/http sends, so an accepted event is always deliverable.
func TestValidateHeaderValueMatchesNetHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	refused := 0
	for b := 0; b < 256; b++ {
		v := "a" + string([]byte{byte(b)}) + "b"
		req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
		req.Header["Ce-Subject"] = []string{v}
		resp, sendErr := srv.Client().Do(req)
		if resp != nil {
			resp.Body.Close()
		}
		err := ValidateHeaderValue("subject", v)
		if (err == nil) != (sendErr == nil) {
			t.Errorf("byte %#02x: ValidateHeaderValue err %v, net/http send err %v; want both nil or both non-nil", b, err, sendErr)
		}
		if err != nil {
			refused++
		}
	}
	if refused != 32 { // 0x00-0x1f except tab, and 0x7f
		t.Errorf("refused %d byte values, want 32", refused)
	}
}

func TestEventValidate(t *testing.T) {
	valid := func() *Event {
		return &Event{ID: "01ABC", Source: "processor", Type: "match_updates", ContentType: "application/json",
			Subject: "match/7", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", IdempotencyKey: "k-1"}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(e *Event)
		wantErr string
	}{
		{name: "valid", mutate: func(e *Event) {}},
		{name: "URI source", mutate: func(e *Event) { e.Source = "urn:fogis:processor" }},
		{name: "tab in subject", mutate: func(e *Event) { e.Subject = "a\tb" }},
		{name: "UTF-8 subject", mutate: func(e *Event) { e.Subject = "Ullevi \u00e5\u00e4\u00f6" }},
		{name: "empty id", mutate: func(e *Event) { e.ID = "" }, wantErr: "id must not be empty"},
		{name: "CR LF in id", mutate: func(e *Event) { e.ID = "a\r\nb" }, wantErr: "id contains control character 0x0d"},
		{name: "empty source", mutate: func(e *Event) { e.Source = "" }, wantErr: "source must be a non-empty"},
		{name: "CR LF in source", mutate: func(e *Event) { e.Source = "a\r\nb" }, wantErr: "source contains control character"},
		{name: "bad escape in source", mutate: func(e *Event) { e.Source = "%zz" }, wantErr: "not a URI-reference"},
		{name: "NUL in type", mutate: func(e *Event) { e.Type = "t\x00" }, wantErr: "type contains control character 0x00"},
		{name: "control char in subject", mutate: func(e *Event) { e.Subject = "\x01" }, wantErr: "subject contains control character 0x01"},
		{name: "DEL in traceparent", mutate: func(e *Event) { e.TraceParent = "00\x7f" }, wantErr: "traceparent contains control character 0x7f"},
		{name: "LF in idempotency key", mutate: func(e *Event) { e.IdempotencyKey = "k\n" }, wantErr: "idempotency key contains control character 0x0a"},
		{name: "content type not a media type", mutate: func(e *Event) { e.ContentType = "not a media type" }, wantErr: "is not a media type"},
		{name: "content type without subtype", mutate: func(e *Event) { e.ContentType = "json" }, wantErr: "want type/subtype"},
		{name: "content type bad parameter", mutate: func(e *Event) { e.ContentType = "text/plain; charset" }, wantErr: "is not a media type"},
		{name: "empty content type", mutate: func(e *Event) { e.ContentType = "" }, wantErr: "is not a media type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := valid()
			tc.mutate(e)
			err := e.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestParseStructuredKeepsEveryAttribute: dataschema and every extension
// (string, number, boolean; the tracing extension's traceparent and
// tracestate too) are kept; the tracing extension is not the hop's trace
// context.
// TestEventValidateNewAttributes: dataschema, tracestate, extensions and
// UTF-8 in every string attribute are checked with the rest.

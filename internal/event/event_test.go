package event

import (
	"errors"
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
		// Every attribute that becomes a delivery header must be sendable.
		{name: "URI source", body: `{"specversion":"1.0","id":"e1","type":"t","source":"https://fogis.example/processor#x"}`, wantData: "", wantCT: DefaultContentType, wantSource: "https://fogis.example/processor#x"},
		{name: "null source", body: `{"specversion":"1.0","id":"e1","type":"t","source":null}`, wantData: "", wantCT: DefaultContentType, wantSource: "svc"},
		{name: "media type with parameters", body: `{"specversion":"1.0","id":"e1","type":"t","datacontenttype":"text/plain; charset=utf-8","data":"hi"}`, wantData: "hi", wantCT: "text/plain; charset=utf-8", wantSource: "svc"},
		{name: "CR LF in source", body: `{"specversion":"1.0","id":"x","type":"t","source":"a\r\nX-Evil: 1"}`, wantErr: "source contains control character 0x0d"},
		{name: "empty source", body: `{"specversion":"1.0","id":"x","type":"t","source":""}`, wantErr: "source must be a non-empty URI-reference"},
		{name: "source not a URI-reference", body: `{"specversion":"1.0","id":"x","type":"t","source":"%zz"}`, wantErr: "not a URI-reference"},
		{name: "control char in subject", body: `{"specversion":"1.0","id":"x","type":"t","subject":"m/\u0001"}`, wantErr: "subject contains control character 0x01"},
		{name: "DEL in subject", body: `{"specversion":"1.0","id":"x","type":"t","subject":"m\u007f"}`, wantErr: "subject contains control character 0x7f"},
		{name: "LF in id", body: `{"specversion":"1.0","id":"x\n","type":"t"}`, wantErr: "id contains control character 0x0a"},
		{name: "NUL in type", body: `{"specversion":"1.0","id":"x","type":"t\u0000"}`, wantErr: "type contains control character 0x00"},
		{name: "bad datacontenttype", body: `{"specversion":"1.0","id":"x","type":"t","datacontenttype":"not a media type","data":"x"}`, wantErr: "datacontenttype \"not a media type\" is not a media type"},
		{name: "datacontenttype without subtype", body: `{"specversion":"1.0","id":"x","type":"t","datacontenttype":"json","data":"x"}`, wantErr: "want type/subtype"},
		{name: "CR in datacontenttype", body: `{"specversion":"1.0","id":"x","type":"t","datacontenttype":"text/plain\r","data":"x"}`, wantErr: "datacontenttype contains control character 0x0d"},
		{name: "control char in traceparent", body: `{"specversion":"1.0","id":"x","type":"t","traceparent":"00-\u001f"}`, wantErr: "traceparent contains control character 0x1f"},
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
			if err := e.Validate(); err != nil {
				t.Fatalf("an accepted event fails Validate: %v", err)
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

package event

import (
	"strings"
	"testing"
)

func TestValidateExtensions(t *testing.T) {
	max20 := strings.Repeat("a", 20)
	for _, tc := range []struct {
		name    string
		ext     map[string]string
		wantErr string
	}{
		{name: "none", ext: nil},
		{name: "valid", ext: map[string]string{"region": "Skåne", "n1": "3", max20: "", "traceparent": "00-x"}},
		{name: "reserved data", ext: map[string]string{"data": "x"}, wantErr: `"data" is a CloudEvents attribute`},
		{name: "reserved dataschema", ext: map[string]string{"dataschema": "x"}, wantErr: "is a CloudEvents attribute"},
		{name: "reserved specversion", ext: map[string]string{"specversion": "1.0"}, wantErr: "is a CloudEvents attribute"},
		{name: "empty name", ext: map[string]string{"": "x"}, wantErr: "must match"},
		{name: "21 characters", ext: map[string]string{max20 + "a": "x"}, wantErr: "must match"},
		{name: "dash", ext: map[string]string{"my-ext": "x"}, wantErr: "must match"},
		{name: "invalid UTF-8", ext: map[string]string{"region": "\xff"}, wantErr: "extension region is not valid UTF-8"},
		{name: "LF", ext: map[string]string{"region": "a\nb"}, wantErr: "extension region contains control character 0x0a"},
		{name: "DEL", ext: map[string]string{"region": "a\x7f"}, wantErr: "control character 0x7f"},
		{name: "exactly 4 KiB", ext: map[string]string{"a": strings.Repeat("v", MaxExtensionBytes-1)}},
		{name: "one byte over 4 KiB", ext: map[string]string{"a": strings.Repeat("v", MaxExtensionBytes)}, wantErr: "4097 bytes in all; at most 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateExtensions(tc.ext)
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

func TestEventValidateNewAttributes(t *testing.T) {
	valid := func() *Event {
		return &Event{ID: "ordre-ö.1", Source: "/shop", Type: "t", ContentType: "application/json",
			DataSchema: "urn:shop:order", TraceState: "shop=1,congo=t61rcWkgMzE", Extensions: map[string]string{"region": "Skåne"}}
	}
	for _, tc := range []struct {
		name    string
		mutate  func(e *Event)
		wantErr string
	}{
		{name: "valid", mutate: func(e *Event) {}},
		{name: "id not UTF-8", mutate: func(e *Event) { e.ID = "ordre-\xff" }, wantErr: "id is not valid UTF-8"},
		{name: "type not UTF-8", mutate: func(e *Event) { e.Type = "\xc3" }, wantErr: "type is not valid UTF-8"},
		{name: "source not UTF-8", mutate: func(e *Event) { e.Source = "/\xff" }, wantErr: "source is not valid UTF-8"},
		{name: "subject not UTF-8", mutate: func(e *Event) { e.Subject = "Malm\xf6" }, wantErr: "subject is not valid UTF-8"},
		{name: "idempotency key not UTF-8", mutate: func(e *Event) { e.IdempotencyKey = "\xff" }, wantErr: "idempotency key is not valid UTF-8"},
		{name: "relative dataschema", mutate: func(e *Event) { e.DataSchema = "a.json" }, wantErr: "not an absolute URI"},
		{name: "tracestate not ASCII", mutate: func(e *Event) { e.TraceState = "shop=ö" }, wantErr: "tracestate must be ASCII"},
		{name: "tracestate with LF", mutate: func(e *Event) { e.TraceState = "a=1\nb" }, wantErr: "tracestate contains control character 0x0a"},
		{name: "tracestate too long", mutate: func(e *Event) { e.TraceState = strings.Repeat("a", 4097) }, wantErr: "tracestate is 4097 bytes; at most 4096"},
		{name: "traceparent not ASCII", mutate: func(e *Event) { e.TraceParent = "00-ö" }, wantErr: "traceparent must be ASCII"},
		{name: "bad extension", mutate: func(e *Event) { e.Extensions["Bad"] = "x" }, wantErr: "must match"},
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

package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

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

func TestParseStructuredKeepsEveryAttribute(t *testing.T) {
	body := `{"specversion":"1.0","id":"ordre-ö.1","type":"order.created","source":"/shop","subject":"Malmö",
		"time":"2026-05-17T15:00:00.123456789+02:00","dataschema":"https://shop.example/order.json",
		"datacontenttype":"application/json","region":"Skåne","attempt":3,"ratio":-1.5e3,"urgent":true,"nothing":null,
		"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"shop=1",
		"data":{"order": 1}}`
	e, err := ParseStructuredCloudEvent([]byte(body), "svc", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := &Event{ID: "ordre-ö.1", Type: "order.created", Source: "/shop", Subject: "Malmö",
		Time: time.Date(2026, 5, 17, 13, 0, 0, 123456789, time.UTC), DataSchema: "https://shop.example/order.json",
		ContentType: "application/json", Data: []byte(`{"order": 1}`),
		Extensions: map[string]string{"region": "Skåne", "attempt": "3", "ratio": "-1.5e3", "urgent": "true",
			"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "shop=1"}}
	sameEvent(t, e, want)
	if err := e.Validate(); err != nil {
		t.Fatalf("an accepted event fails Validate: %v", err)
	}
}

func TestParseStructuredRefusals(t *testing.T) {
	many := map[string]any{"specversion": "1.0", "id": "e", "type": "t"}
	for i := range MaxExtensions + 1 {
		many[fmt.Sprintf("x%d", i)] = "v"
	}
	tooMany, _ := json.Marshal(many)
	big, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": "e", "type": "t", "a": strings.Repeat("v", 2100), "b": strings.Repeat("v", 2100)})
	for _, tc := range []struct{ name, body, wantErr string }{
		{"specversion 9.9", `{"specversion":"9.9","id":"e","type":"t"}`, `specversion "9.9" is not supported`},
		{"specversion a number", `{"specversion":1.0,"id":"e","type":"t"}`, "specversion must be a string"},
		{"id a number", `{"specversion":"1.0","id":7,"type":"t"}`, "id must be a string"},
		{"invalid UTF-8 in the body", "{\"specversion\":\"1.0\",\"id\":\"ordre-\xff\",\"type\":\"t\"}", "not valid UTF-8"},
		{"not an object", `null`, "must be a JSON object"},
		{"relative dataschema", `{"specversion":"1.0","id":"e","type":"t","dataschema":"/schemas/a.json"}`, "not an absolute URI"},
		{"dataschema a number", `{"specversion":"1.0","id":"e","type":"t","dataschema":1}`, "dataschema must be a string"},
		{"extension name with upper case", `{"specversion":"1.0","id":"e","type":"t","Region":"x"}`, `extension name "Region" must match`},
		{"extension name with underscore", `{"specversion":"1.0","id":"e","type":"t","my_ext":"x"}`, `extension name "my_ext" must match`},
		{"extension name too long", `{"specversion":"1.0","id":"e","type":"t","abcdefghijklmnopqrstu":"x"}`, "must match"},
		{"extension an object", `{"specversion":"1.0","id":"e","type":"t","geo":{"lat":1}}`, "extension geo must be a string, number or boolean, not a JSON object"},
		{"extension an array", `{"specversion":"1.0","id":"e","type":"t","tags":["a"]}`, "not a JSON array"},
		{"extension with a control character", `{"specversion":"1.0","id":"e","type":"t","region":"a\u0001"}`, "extension region contains control character 0x01"},
		{"extension with a tab", `{"specversion":"1.0","id":"e","type":"t","region":"a\tb"}`, "extension region contains control character 0x09"},
		{"extension with a C1 control", `{"specversion":"1.0","id":"e","type":"t","region":"a\u0085"}`, "extension region contains control character U+0085"},
		{"too many extensions", string(tooMany), "33 extension attributes; at most 32"},
		{"extensions too large", string(big), "at most 4096"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseStructuredCloudEvent([]byte(tc.body), "svc", time.Now())
			if err == nil || !errors.Is(err, ErrMalformedCloudEvent) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want a malformed CloudEvent error containing %q", err, tc.wantErr)
			}
		})
	}
}

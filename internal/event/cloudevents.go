package event

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"
	"unicode/utf8"
)

// CloudEventsContentType is the media type of a structured-mode CloudEvent.
const CloudEventsContentType = "application/cloudevents+json"

// ErrMalformedCloudEvent wraps every reason a structured CloudEvent is refused.
var ErrMalformedCloudEvent = errors.New("malformed CloudEvent")

// IsStructuredCloudEvent reports whether a Content-Type header announces a
// structured-mode CloudEvent.
func IsStructuredCloudEvent(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == CloudEventsContentType
}

// CloudEventsBatchContentType is the media type of a JSON batch of
// structured-mode CloudEvents.
const CloudEventsBatchContentType = "application/cloudevents-batch+json"

// IsCloudEventsBatch reports whether a Content-Type header announces a
// batch of CloudEvents.
func IsCloudEventsBatch(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == CloudEventsBatchContentType
}

// ParseStructuredCloudEvent turns a structured-mode CloudEvent (JSON format)
// into an Event. id, type and specversion ("1.0") are required; source,
// when present, must be a non-empty URI-reference (absent, it defaults to
// defaultSource); time defaults to now. Every other member is an extension
// attribute, kept in its canonical string form; the distributed-tracing
// extension's traceparent and tracestate are extensions like any other
// (the hop's trace context comes from the request's headers). Attributes
// that become delivery headers must be sendable as HTTP header values.
func ParseStructuredCloudEvent(body []byte, defaultSource string, now time.Time) (*Event, error) {
	e, err := parseStructured(body, defaultSource, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCloudEvent, err)
	}
	return e, nil
}

func parseStructured(body []byte, defaultSource string, now time.Time) (*Event, error) {
	// JSON is UTF-8; Go's decoder would turn bad bytes into U+FFFD, and the
	// receipt would name an id that no longer is the publisher's.
	if !utf8.Valid(body) {
		return nil, errors.New("the event is not valid UTF-8")
	}
	var members map[string]json.RawMessage
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&members); err != nil {
		return nil, err
	}
	if members == nil {
		return nil, errors.New("the event must be a JSON object")
	}
	return fromMembers(members, defaultSource, now)
}

// fromMembers builds the event from a structured event's top-level
// members (raw JSON values, by name); it consumes members.
func fromMembers(members map[string]json.RawMessage, defaultSource string, now time.Time) (*Event, error) {
	var firstErr error
	// str takes a string attribute out of members; null is absent.
	str := func(name string) (string, bool) {
		raw, ok := members[name]
		delete(members, name)
		if !ok || string(raw) == "null" {
			return "", false
		}
		var v string
		if err := json.Unmarshal(raw, &v); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("%s must be a string", name)
		}
		return v, true
	}
	specVersion, _ := str("specversion")
	id, _ := str("id")
	typ, _ := str("type")
	source, hasSource := str("source")
	subject, _ := str("subject")
	ts, _ := str("time")
	dataContentType, _ := str("datacontenttype")
	dataSchema, hasDataSchema := str("dataschema")
	dataBase64, _ := str("data_base64")
	data := members["data"]
	delete(members, "data")
	switch {
	case firstErr != nil:
		return nil, firstErr
	case specVersion == "":
		return nil, errors.New("specversion is required")
	case specVersion != SpecVersion:
		return nil, fmt.Errorf("specversion %q is not supported (want %s)", specVersion, SpecVersion)
	case id == "":
		return nil, errors.New("id is required")
	case typ == "":
		return nil, errors.New("type is required")
	}
	e := &Event{ID: id, Source: defaultSource, Type: typ, Subject: subject, ContentType: dataContentType, Time: now}
	if hasSource {
		if err := ValidateSource(source); err != nil {
			return nil, err
		}
		e.Source = source
	}
	if hasDataSchema {
		if err := ValidateDataSchema(dataSchema); err != nil {
			return nil, err
		}
		e.DataSchema = dataSchema
	}
	if ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, fmt.Errorf("time %q is not RFC 3339", ts)
		}
		e.Time = t
	}
	ext, err := structuredExtensions(members)
	if err != nil {
		return nil, err
	}
	e.Extensions = ext
	if err := validateStructured(e, dataContentType); err != nil {
		return nil, err
	}
	hasData := len(data) > 0 && string(data) != "null"
	switch {
	case dataBase64 != "" && hasData:
		return nil, errors.New("data and data_base64 are mutually exclusive")
	case dataBase64 != "":
		b, err := base64.StdEncoding.DecodeString(dataBase64)
		if err != nil {
			return nil, fmt.Errorf("data_base64: %v", err)
		}
		e.Data = b
		if e.ContentType == "" {
			e.ContentType = DefaultContentType
		}
	case hasData:
		if e.ContentType == "" {
			e.ContentType = "application/json"
		}
		e.Data = []byte(data)
		// A JSON string carried for a non-JSON content type is the text itself.
		if !isJSONType(e.ContentType) && data[0] == '"' {
			var s string
			if err := json.Unmarshal(data, &s); err != nil {
				return nil, fmt.Errorf("data: %v", err)
			}
			e.Data = []byte(s)
		}
	default:
		e.Data = []byte{}
		if e.ContentType == "" {
			e.ContentType = DefaultContentType
		}
	}
	return e, nil
}

// structuredExtensions turns the members left after the known attributes
// into extensions: a string as its text, a number or boolean as its JSON
// text; null is absent. Objects and arrays are no attribute values.
func structuredExtensions(members map[string]json.RawMessage) (map[string]string, error) {
	var ext map[string]string
	for name, raw := range members {
		raw = bytes.TrimSpace(raw)
		var v string
		switch {
		case string(raw) == "null":
			continue
		case raw[0] == '"':
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("extension %s: %v", name, err)
			}
		case raw[0] == '{' || raw[0] == '[':
			return nil, fmt.Errorf("extension %s must be a string, number or boolean, not a JSON %s", name, map[byte]string{'{': "object", '[': "array"}[raw[0]])
		default: // number, true, false
			v = string(raw)
		}
		if ext == nil {
			ext = map[string]string{}
		}
		ext[name] = v
	}
	return ext, ValidateExtensions(ext)
}

// validateStructured checks every attribute that becomes a delivery header
// (ce-id, ce-type, ce-subject, Content-Type): an event accepted with a
// value net/http cannot send would fail every delivery attempt and hold
// its topic.
func validateStructured(e *Event, dataContentType string) error {
	for _, a := range []struct{ name, v string }{{"id", e.ID}, {"type", e.Type}} {
		if err := ValidateAttr(a.name, a.v); err != nil {
			return err
		}
	}
	if err := ValidateText("subject", e.Subject); err != nil {
		return err
	}
	if dataContentType != "" {
		if err := ValidateContentType("datacontenttype", dataContentType); err != nil {
			return err
		}
	}
	return nil
}

func isJSONType(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

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

type structuredCE struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          *string         `json:"source"` // nil = absent: the default applies
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	Data            json.RawMessage `json:"data"`
	DataBase64      string          `json:"data_base64"`
	TraceParent     string          `json:"traceparent"`
}

// ParseStructuredCloudEvent turns a structured-mode CloudEvent (JSON format)
// into an Event. id, type and specversion ("1.0") are required; source,
// when present, must be a non-empty URI-reference (absent, it defaults to
// defaultSource); time defaults to now. Attributes that become delivery
// headers must be sendable as HTTP header values.
func ParseStructuredCloudEvent(body []byte, defaultSource string, now time.Time) (*Event, error) {
	var ce structuredCE
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ce); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCloudEvent, err)
	}
	switch {
	case ce.SpecVersion == "":
		return nil, fmt.Errorf("%w: specversion is required", ErrMalformedCloudEvent)
	case ce.SpecVersion != "1.0":
		return nil, fmt.Errorf("%w: specversion %q is not supported (want 1.0)", ErrMalformedCloudEvent, ce.SpecVersion)
	case ce.ID == "":
		return nil, fmt.Errorf("%w: id is required", ErrMalformedCloudEvent)
	case ce.Type == "":
		return nil, fmt.Errorf("%w: type is required", ErrMalformedCloudEvent)
	}
	if err := validateStructured(&ce); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedCloudEvent, err)
	}
	e := &Event{
		ID:          ce.ID,
		Source:      defaultSource,
		Type:        ce.Type,
		Subject:     ce.Subject,
		TraceParent: ce.TraceParent,
		ContentType: ce.DataContentType,
		Time:        now,
	}
	if ce.Source != nil {
		e.Source = *ce.Source
	}
	if ce.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, ce.Time)
		if err != nil {
			return nil, fmt.Errorf("%w: time %q is not RFC 3339", ErrMalformedCloudEvent, ce.Time)
		}
		e.Time = t
	}
	hasData := len(ce.Data) > 0 && string(ce.Data) != "null"
	switch {
	case ce.DataBase64 != "" && hasData:
		return nil, fmt.Errorf("%w: data and data_base64 are mutually exclusive", ErrMalformedCloudEvent)
	case ce.DataBase64 != "":
		b, err := base64.StdEncoding.DecodeString(ce.DataBase64)
		if err != nil {
			return nil, fmt.Errorf("%w: data_base64: %v", ErrMalformedCloudEvent, err)
		}
		e.Data = b
		if e.ContentType == "" {
			e.ContentType = DefaultContentType
		}
	case hasData:
		if e.ContentType == "" {
			e.ContentType = "application/json"
		}
		e.Data = []byte(ce.Data)
		// A JSON string carried for a non-JSON content type is the text itself.
		if !isJSONType(e.ContentType) && ce.Data[0] == '"' {
			var s string
			if err := json.Unmarshal(ce.Data, &s); err != nil {
				return nil, fmt.Errorf("%w: data: %v", ErrMalformedCloudEvent, err)
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

// validateStructured checks every attribute that becomes a delivery header
// (ce-id, ce-source, ce-type, ce-subject, Content-Type, traceparent): an
// event accepted with a value net/http cannot send would fail every
// delivery attempt and hold its topic.
func validateStructured(ce *structuredCE) error {
	for _, a := range []struct{ name, v string }{{"id", ce.ID}, {"type", ce.Type}} {
		if err := ValidateAttr(a.name, a.v); err != nil {
			return err
		}
	}
	if ce.Source != nil {
		if err := ValidateSource(*ce.Source); err != nil {
			return err
		}
	}
	if err := ValidateHeaderValue("subject", ce.Subject); err != nil {
		return err
	}
	if ce.DataContentType != "" {
		if err := ValidateContentType("datacontenttype", ce.DataContentType); err != nil {
			return err
		}
	}
	if ce.TraceParent != "" {
		if err := ValidateAttr("traceparent", ce.TraceParent); err != nil {
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

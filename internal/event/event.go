// Package event is the shared vocabulary of sidecar: the event, its id, its
// Redis fields, and the validation rules every other package agrees on.
package event

import (
	"errors"
	"fmt"
	"mime"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/oklog/ulid/v2"
)

// Event is one published message. Data is carried byte for byte.
type Event struct {
	ID             string
	Source         string
	Type           string
	Time           time.Time
	ContentType    string
	Data           []byte
	Subject        string
	TraceParent    string
	IdempotencyKey string
}

// Receipt is what a publisher is told about an accepted event.
type Receipt struct {
	ID       string `json:"id"`
	Topic    string `json:"topic"`
	StreamID string `json:"stream_id,omitempty"`
	// Spooled is true when Redis was unavailable and the event was written
	// durably to the local spool instead; it reaches the stream later.
	Spooled bool `json:"spooled,omitempty"`
	// Duplicate is true when an Idempotency-Key matched an earlier publish
	// and this receipt is that publish's, replayed.
	Duplicate bool `json:"-"`
}

// Entry field names: part of the external contract (DESIGN.md, Redis layout).
const (
	FieldID             = "id"
	FieldSource         = "source"
	FieldType           = "type"
	FieldTime           = "time"
	FieldContentType    = "content_type"
	FieldData           = "data"
	FieldSubject        = "subject"
	FieldTraceParent    = "traceparent"
	FieldIdempotencyKey = "idempotency_key"
)

// DefaultContentType is used when a publisher sends no Content-Type.
const DefaultContentType = "application/octet-stream"

var topicRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$`)

// ErrInvalidTopic is returned for a topic name outside the contract's pattern.
var ErrInvalidTopic = errors.New("topic must match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")

// ValidateTopic reports whether topic is a legal topic name.
func ValidateTopic(topic string) error {
	if !topicRE.MatchString(topic) {
		return fmt.Errorf("invalid topic %q: %w", topic, ErrInvalidTopic)
	}
	return nil
}

// NewID returns a new event id: a ULID, monotonic within this process.
func NewID() string { return ulid.Make().String() }

// maxAttrLen bounds publisher-supplied attributes (ids, keys, types).
const maxAttrLen = 256

// ValidateAttr checks a publisher-supplied attribute such as ce-id or an
// Idempotency-Key: non-empty, bounded, printable.
func ValidateAttr(name, v string) error {
	if v == "" {
		return fmt.Errorf("%s must not be empty", name)
	}
	if len(v) > maxAttrLen {
		return fmt.Errorf("%s is %d bytes; at most %d", name, len(v), maxAttrLen)
	}
	if err := ValidateHeaderValue(name, v); err != nil {
		return err
	}
	if strings.IndexFunc(v, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("%s must be printable text", name)
	}
	return nil
}

// ValidateHeaderValue refuses a value that net/http would refuse to send as
// a header value: a control character other than tab (CR and LF included),
// or DEL. Every attribute that becomes a delivery header passes here at
// publish, so an event that can never be delivered is never accepted.
func ValidateHeaderValue(name, v string) error {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return fmt.Errorf("%s contains control character %#02x at byte %d; it cannot be sent as an HTTP header", name, c, i)
		}
	}
	return nil
}

// ValidateSource checks an event source: a non-empty URI-reference
// (CloudEvents) that can be sent as the ce-source header.
func ValidateSource(v string) error {
	if v == "" {
		return errors.New("source must be a non-empty URI-reference")
	}
	if err := ValidateHeaderValue("source", v); err != nil {
		return err
	}
	if _, err := url.Parse(v); err != nil {
		return fmt.Errorf("source %q is not a URI-reference: %v", v, err)
	}
	return nil
}

// ValidateContentType checks a media type (Content-Type, CloudEvents
// datacontenttype): it must parse as type/subtype with well-formed
// parameters, and be sendable as the Content-Type header.
func ValidateContentType(name, v string) error {
	if err := ValidateHeaderValue(name, v); err != nil {
		return err
	}
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return fmt.Errorf("%s %q is not a media type: %v", name, v, err)
	}
	if !strings.Contains(mt, "/") {
		return fmt.Errorf("%s %q is not a media type: want type/subtype", name, v)
	}
	return nil
}

// Validate checks every attribute that becomes an HTTP header on delivery
// (ce-id, ce-source, ce-type, ce-subject, Content-Type, traceparent) and the
// idempotency key, so that an accepted event can always be delivered.
func (e *Event) Validate() error {
	if err := ValidateAttr("id", e.ID); err != nil {
		return err
	}
	if err := ValidateSource(e.Source); err != nil {
		return err
	}
	if err := ValidateAttr("type", e.Type); err != nil {
		return err
	}
	if err := ValidateContentType("content type", e.ContentType); err != nil {
		return err
	}
	for _, a := range []struct{ name, v string }{
		{"subject", e.Subject}, {"traceparent", e.TraceParent}, {"idempotency key", e.IdempotencyKey},
	} {
		if err := ValidateHeaderValue(a.name, a.v); err != nil {
			return err
		}
	}
	return nil
}

// Values returns the event as XADD field/value pairs, in a fixed order.
func (e *Event) Values() []any {
	v := make([]any, 0, 18)
	v = append(v,
		FieldID, e.ID,
		FieldSource, e.Source,
		FieldType, e.Type,
		FieldTime, e.Time.UTC().Format(time.RFC3339Nano),
		FieldContentType, e.ContentType,
		FieldData, e.Data,
	)
	if e.Subject != "" {
		v = append(v, FieldSubject, e.Subject)
	}
	if e.TraceParent != "" {
		v = append(v, FieldTraceParent, e.TraceParent)
	}
	if e.IdempotencyKey != "" {
		v = append(v, FieldIdempotencyKey, e.IdempotencyKey)
	}
	return v
}

// ErrNoData marks a stream entry that is not a sidecar event (no id or data
// field), e.g. an entry trimmed away before it was read.
var ErrNoData = errors.New("entry has no event fields")

// FromValues rebuilds an event from a stream entry's fields.
func FromValues(vals map[string]any) (*Event, error) {
	str := func(k string) string {
		s, _ := vals[k].(string)
		return s
	}
	id := str(FieldID)
	data, hasData := vals[FieldData].(string)
	if id == "" || !hasData {
		return nil, ErrNoData
	}
	e := &Event{
		ID:             id,
		Source:         str(FieldSource),
		Type:           str(FieldType),
		ContentType:    str(FieldContentType),
		Data:           []byte(data),
		Subject:        str(FieldSubject),
		TraceParent:    str(FieldTraceParent),
		IdempotencyKey: str(FieldIdempotencyKey),
	}
	if e.ContentType == "" {
		e.ContentType = DefaultContentType
	}
	if t := str(FieldTime); t != "" {
		ts, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return nil, fmt.Errorf("entry %s: bad time %q: %w", id, t, err)
		}
		e.Time = ts
	}
	return e, nil
}

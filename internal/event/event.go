// Package event is the shared vocabulary of sidecar: the event, its id, its
// Redis fields, and the validation rules every other package agrees on.
package event

import (
	"errors"
	"fmt"
	"maps"
	"mime"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Event is one published message: a CloudEvent (specversion 1.0) whose
// data is carried byte for byte.
type Event struct {
	ID          string
	Source      string
	Type        string
	Time        time.Time
	ContentType string
	Data        []byte
	Subject     string
	// DataSchema is the CloudEvents dataschema attribute (an absolute URI).
	DataSchema string
	// TraceParent and TraceState are the W3C trace context of the publish
	// request (its traceparent and tracestate headers), forwarded with each
	// delivery. They are not the CloudEvents distributed-tracing extension:
	// a structured event's own traceparent attribute is an extension.
	TraceParent string
	TraceState  string
	// Extensions are the CloudEvents extension attributes, by name, each
	// value in its canonical string form (see ValidateExtensions).
	Extensions     map[string]string
	IdempotencyKey string
}

// SpecVersion is the only CloudEvents specversion sidecar accepts and sends.
const SpecVersion = "1.0"

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
	FieldDataSchema     = "dataschema"
	FieldTraceState     = "tracestate"
	// FieldExtensionPrefix starts the field of each extension attribute:
	// "ext.<name>".
	FieldExtensionPrefix = "ext."
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
	if err := ValidateText(name, v); err != nil {
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

// ValidateText is ValidateHeaderValue for a value that must also be valid
// UTF-8: every string attribute, so that what a publisher is told (the
// receipt) is byte for byte what a subscriber receives.
func ValidateText(name, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s is not valid UTF-8", name)
	}
	return ValidateHeaderValue(name, v)
}

// ValidateSource checks an event source: a non-empty URI-reference
// (CloudEvents) that can be sent as the ce-source header.
func ValidateSource(v string) error {
	if v == "" {
		return errors.New("source must be a non-empty URI-reference")
	}
	if err := ValidateText("source", v); err != nil {
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
	if err := ValidateText(name, v); err != nil {
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
// (ce-id, ce-source, ce-type, ce-subject, ce-dataschema, the extensions'
// ce-<name>, Content-Type, traceparent, tracestate) and the idempotency
// key, so that an accepted event can always be delivered.
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
		{"subject", e.Subject}, {"idempotency key", e.IdempotencyKey},
	} {
		if err := ValidateText(a.name, a.v); err != nil {
			return err
		}
	}
	if err := ValidateTraceHeader("traceparent", e.TraceParent); err != nil {
		return err
	}
	if err := ValidateTraceHeader("tracestate", e.TraceState); err != nil {
		return err
	}
	if e.DataSchema != "" {
		if err := ValidateDataSchema(e.DataSchema); err != nil {
			return err
		}
	}
	return ValidateExtensions(e.Extensions)
}

// Values returns the event as XADD field/value pairs, in a fixed order
// (extensions last, by name).
func (e *Event) Values() []any {
	v := make([]any, 0, 22+2*len(e.Extensions))
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
	if e.DataSchema != "" {
		v = append(v, FieldDataSchema, e.DataSchema)
	}
	if e.TraceState != "" {
		v = append(v, FieldTraceState, e.TraceState)
	}
	for _, name := range e.ExtensionNames() {
		v = append(v, FieldExtensionPrefix+name, e.Extensions[name])
	}
	return v
}

// ExtensionNames returns the names of the event's extensions, sorted.
func (e *Event) ExtensionNames() []string {
	if len(e.Extensions) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(e.Extensions))
}

// ErrNoData marks a stream entry that is not a sidecar event (no id or data
// field), e.g. an entry trimmed away before it was read.
var ErrNoData = errors.New("entry has no event fields")

// FromValues rebuilds an event from a stream entry's fields. An entry
// written by an older sidecar (no dataschema, tracestate or extension
// fields) reads as before.
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
		DataSchema:     str(FieldDataSchema),
		TraceParent:    str(FieldTraceParent),
		TraceState:     str(FieldTraceState),
		IdempotencyKey: str(FieldIdempotencyKey),
	}
	for k, v := range vals {
		name, ok := strings.CutPrefix(k, FieldExtensionPrefix)
		if !ok {
			continue
		}
		// A field no sidecar writes (another client's) would become a
		// header net/http cannot send: refuse the entry, with the reason.
		if err := ValidateExtensionName(name); err != nil {
			return nil, fmt.Errorf("entry %s: field %s: %w", id, k, err)
		}
		s, _ := v.(string)
		if e.Extensions == nil {
			e.Extensions = map[string]string{}
		}
		e.Extensions[name] = s
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

package event

import (
	"fmt"
	"strconv"
	"strings"
)

// PartitionKeyExtension is the CloudEvents partitioning extension's
// attribute: the key that picks a partitioned topic's stream and, under
// `ordering: key`, the events that are never in flight together. It is
// stored like any extension (Redis field ext.partitionkey) and delivered as
// ce-partitionkey.
const PartitionKeyExtension = "partitionkey"

// PartitionKey is the event's partition key: its partitionkey extension,
// else its id.
func (e *Event) PartitionKey() string {
	if k := e.Extensions[PartitionKeyExtension]; k != "" {
		return k
	}
	return e.ID
}

// SetPartitionKey sets the partitionkey extension ("" leaves it unset).
func (e *Event) SetPartitionKey(key string) {
	if key == "" {
		return
	}
	if e.Extensions == nil {
		e.Extensions = map[string]string{}
	}
	e.Extensions[PartitionKeyExtension] = key
}

// PartitionKeyOf is the partition key of a stream entry's fields, without
// decoding the whole event: ext.partitionkey, else the event id.
func PartitionKeyOf(vals map[string]any) string {
	if k, _ := vals[FieldExtensionPrefix+PartitionKeyExtension].(string); k != "" {
		return k
	}
	id, _ := vals[FieldID].(string)
	return id
}

// ValidateStreamTopic accepts what names one stream inside the sidecar: a
// topic, or partition k ≥ 1 of one ("orders#3").
func ValidateStreamTopic(t string) error {
	base, k, ok := strings.Cut(t, "#")
	if !ok {
		return ValidateTopic(t)
	}
	if n, err := strconv.Atoi(k); err != nil || n < 1 || strconv.Itoa(n) != k {
		return fmt.Errorf("invalid partition %q of topic %q", k, base)
	}
	return ValidateTopic(base)
}

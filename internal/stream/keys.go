// Package stream is sidecar's Redis Streams layer: publishing events,
// consuming them through consumer groups (pending recovery, claiming,
// keep-alive), retrying, and dead-lettering. It knows nothing of HTTP.
package stream

import "crypto/sha256"
import "encoding/hex"

// Key is the stream of a topic. The hash tag keeps a topic's keys in one
// Cluster slot, so the idempotency script and DLQ transaction stay single-slot.
func Key(topic string) string { return "sidecar:{" + topic + "}" }

// DLQKey is the dead-letter stream of a topic.
func DLQKey(topic string) string { return Key(topic) + ":dlq" }

// idemKey remembers one Idempotency-Key's result. The key is hashed so any
// printable key a client sends makes a well-formed, bounded Redis key.
func idemKey(topic, key string) string {
	sum := sha256.Sum256([]byte(key))
	return Key(topic) + ":idem:" + hex.EncodeToString(sum[:16])
}

package stream

import (
	"errors"
	"net"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated is a write the master applied that did not reach the
// required number of replicas in time (WAIT). A failover now could drop it,
// so it is not acknowledged: the caller spools it and drains it later,
// idempotently (it may well exist already).
var ErrNotReplicated = errors.New("write not acknowledged by enough replicas in time")

// transientReplies are Redis error replies that say "not now": the server is
// loading, busy, read-only during a failover, out of memory under
// noeviction, or the cluster is reconfiguring. Retrying later succeeds
// without anyone changing the data.
var transientReplies = []string{
	"LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY",
	"OOM", "NOREPLICAS", "MOVED", "ASK", "NOAUTH", "WRONGPASS",
	"UNBLOCKED", // a blocked WAIT on a master being demoted
	"MISCONF",   // persistence failing: Redis refuses writes until it recovers
	"ERR max number of clients",
}

// IsRejected reports whether err is Redis refusing this command on this key
// for a reason that waiting will not fix: the key holds another type
// (WRONGTYPE), the user may not run the command (NOPERM), a script error.
// Such a publish fails at once (the client is told) instead of spooling:
// spooled, it could never drain. Connectivity errors, timeouts and the
// replies in transientReplies are not rejections.
//
// Authentication failures are treated as transient on purpose: they are
// about the whole connection, not one key, and an operator fixing the
// password should find the events waiting in the spool.
func IsRejected(err error) bool {
	if err == nil || errors.Is(err, ErrNotReplicated) {
		return false
	}
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return false // a network error, a timeout, a closed client
	}
	msg := rerr.Error()
	for _, p := range transientReplies {
		if strings.HasPrefix(msg, p) {
			return false
		}
	}
	// go-redis reports some of its own conditions as redis.Error values.
	if strings.HasPrefix(msg, "redis: ") {
		return false
	}
	return true
}

// IsUncertain reports whether a failed write may still have been applied:
// it was sent but no (sufficient) answer came — a timeout, a broken
// connection mid-reply, or a write that did not reach enough replicas.
func IsUncertain(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrNotReplicated) {
		return true
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		return false // Redis answered: the command was refused, not applied
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false // never connected: nothing was sent
	}
	return true // sent, no answer: assume it may have landed
}

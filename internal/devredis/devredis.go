// Package devredis provides dev mode's embedded, in-memory Redis-compatible
// server, started only when nothing answers at the configured address.
package devredis

import (
	"fmt"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// StartIfAbsent starts an in-memory server on addr unless something already
// listens there. It returns nil, nil when an existing server answered.
func StartIfAbsent(addr string) (*miniredis.Miniredis, error) {
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		return nil, nil
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("dev mode: start in-memory redis on %s: %w", addr, err)
	}
	return m, nil
}

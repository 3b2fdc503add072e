package devredis

import (
	"net"
	"testing"
)

func TestStartIfAbsent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	busy := l.Addr().String()
	m, err := StartIfAbsent(busy)
	if err != nil || m != nil {
		t.Fatalf("something listens at %s: got server %v, err %v; want neither", busy, m, err)
	}
	l.Close() // now nothing answers there
	m, err = StartIfAbsent(busy)
	if err != nil || m == nil {
		t.Fatalf("nothing listens at %s: got server %v, err %v; want a server", busy, m, err)
	}
	defer m.Close()
	if m.Addr() != busy {
		t.Fatalf("embedded server at %s, want %s", m.Addr(), busy)
	}
}

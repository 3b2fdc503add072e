package test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// respSidecar starts a sidecar whose Redis-protocol port (SIDECAR_RESP_LISTEN)
// is on a free port, and returns it with that port's address.
func respSidecar(t *testing.T, name string, env ...string) (*sidecar, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	s := startSidecar(t, name, append([]string{"SIDECAR_RESP_LISTEN=" + addr}, env...)...)
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("%s: nothing listens on SIDECAR_RESP_LISTEN=%s (%v): is the Redis-protocol ingress wired in cmd/sidecar?", name, addr, err)
	}
	c.Close()
	return s, addr
}

// respClient is a go-redis client of a sidecar's Redis-protocol port.
func respClient(t *testing.T, addr string, proto int, password string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr, Protocol: proto, Password: password, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func respReceive(t *testing.T, ps *goredis.PubSub, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), n, err)
		}
		got = append(got, m.Payload)
	}
	return got
}

func respPublish(t *testing.T, c *goredis.Client, topic, msg string) {
	t.Helper()
	if n, err := c.Publish(context.Background(), topic, msg).Result(); err != nil || n < 1 {
		t.Fatalf("PUBLISH %s: got %d, %v; want at least 1", topic, n, err)
	}
}

// TestRespFOGISShape: the processor's sidecar takes PUBLISH, the
// calendar's sidecar delivers through its group to a SUBSCRIBE; the
// calendar's subscriber, away while three updates are published, gets them
// in order when it subscribes again; Redis down during PUBLISH: answered,
// spooled, delivered later.
func TestRespFOGISShape(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "resp")
	_, paddr := respSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	_, caddr := respSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=calendar")
	pub := respClient(t, paddr, 3, "")
	sub := respClient(t, caddr, 2, "")

	ps := redistest.Subscribe(t, sub, topic+".v2", topic+".v1", topic, topic+".status", topic+".alerts")
	envelope := `{"message_id": "m-1", "type": "match_updates", "payload": {"matches": [{"matchid": 1}]}}`
	respPublish(t, pub, topic, envelope)
	if got := respReceive(t, ps, 1); got[0] != envelope {
		t.Fatalf("calendar got %q, want the envelope byte for byte", got[0])
	}

	_ = ps.Close()
	want := []string{"away 1", "away 2", "away 3"}
	for _, m := range want {
		respPublish(t, pub, topic, m)
	}
	ps = redistest.Subscribe(t, sub, topic)
	if got := respReceive(t, ps, 3); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("after reconnect: got %q, want %q", got, want)
	}

	redis.Kill()
	start := time.Now()
	respPublish(t, pub, topic, "while down")
	t.Logf("PUBLISH answered in %v with Redis down", time.Since(start).Round(time.Millisecond))
	redis.Restart()
	if got := respReceive(t, ps, 1); got[0] != "while down" {
		t.Fatalf("after the outage: got %q, want %q", got[0], "while down")
	}
}

// TestRespClients: redis-cli and go-redis (RESP2 and RESP3) handshakes
// against the binary; unknown commands name themselves.
func TestRespClients(t *testing.T) {
	redis := redistest.Start(t)
	_, addr := respSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor")
	ctx := context.Background()
	for _, proto := range []int{2, 3} {
		c := respClient(t, addr, proto, "")
		if got, err := c.Ping(ctx).Result(); err != nil || got != "PONG" {
			t.Errorf("go-redis RESP%d PING: got %q, %v", proto, got, err)
		}
		err := c.Do(ctx, "GET", "k").Err()
		if want := "ERR unknown command 'GET', with args beginning with: 'k' "; err == nil || err.Error() != want {
			t.Errorf("go-redis RESP%d GET: got %v, want %q", proto, err, want)
		}
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		redistest.SkipOrFail(t, "redis-cli is not on PATH")
	}
	host, port, _ := net.SplitHostPort(addr)
	topic := redistest.UniqueTopic(t, "cli")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "PONG"},
		{[]string{"-3", "PING"}, "PONG"},
		{[]string{"PUBLISH", topic, "hello"}, "1"},
	} {
		out, err := exec.Command(cli, append([]string{"-h", host, "-p", port}, tc.args...)...).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("redis-cli %q: got %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

// TestRespAuth: with SIDECAR_API_TOKEN set, the token is the password.
func TestRespAuth(t *testing.T) {
	redis := redistest.Start(t)
	_, addr := respSidecar(t, "processor", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=processor", "SIDECAR_API_TOKEN=tok-123")
	ctx := context.Background()
	if err := respClient(t, addr, 3, "").Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Errorf("without the token: got %v, want NOAUTH", err)
	}
	if got, err := respClient(t, addr, 3, "tok-123").Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Errorf("with the token: got %q, %v; want PONG", got, err)
	}
}

// TestRespSigterm: SIGTERM with a subscribed client and a publisher
// connected is a clean exit, and the subscription continues after a restart.
func TestRespSigterm(t *testing.T) {
	redis := redistest.StartProcess(t)
	topic := redistest.UniqueTopic(t, "resp-term")
	s, addr := respSidecar(t, "calendar", "REDIS_URL="+redis.URL, "SIDECAR_SERVICE=calendar")
	sub := respClient(t, addr, 3, "")
	ps := redistest.Subscribe(t, sub, topic)
	pub := respClient(t, addr, 3, "")
	respPublish(t, pub, topic, "one")
	respReceive(t, ps, 1)
	start := time.Now()
	if err := s.term(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM: got exit %v, want 0", err)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	s.restart()
	eventually.True(t, 10*time.Second, "the RESP port after restart", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	respPublish(t, respClient(t, addr, 3, ""), topic, "two")
	ps2 := redistest.Subscribe(t, respClient(t, addr, 3, ""), topic)
	if got := respReceive(t, ps2, 1); got[0] != "two" {
		t.Fatalf("after restart: got %q, want two", got[0])
	}
}

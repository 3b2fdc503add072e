package resp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/eventually"
	"github.com/fogis-sidecar/sidecar/internal/redistest"
)

// step is one command and the exact bytes of its reply.
type step struct {
	cmd  []string
	want string
}

func cmd(args ...string) []string { return args }

// runSteps sends each step's command on r and checks its reply.
func runSteps(r *raw, steps []step) {
	r.t.Helper()
	for _, s := range steps {
		r.send(s.cmd...)
		r.expect(strings.Join(s.cmd, " "), s.want)
	}
}

// TestProtocol checks replies byte for byte, as real Redis 7 gives them, for
// what the clients send while connecting and subscribing.
func TestProtocol(t *testing.T) {
	f := start(t, fixtureOpts{})
	const notInContext = "-ERR Can't execute 'publish': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
	sub := func(kind, name string, n int64) string { return array(3) + bulk(kind) + bulk(name) + integer(n) }
	sub3 := func(kind, name string, n int64) string { return push(3) + bulk(kind) + bulk(name) + integer(n) }
	cases := []struct {
		name  string
		steps func(topic string, id int64) []step
		quit  bool // the server closes the connection after the last step
	}{
		{"ping", func(string, int64) []step {
			return []step{{cmd("PING"), "+PONG\r\n"}, {cmd("ping"), "+PONG\r\n"}, {cmd("PING", "hello"), bulk("hello")},
				{cmd("PING", "a", "b"), "-ERR wrong number of arguments for 'ping' command\r\n"}}
		}, false},
		{"echo", func(string, int64) []step { return []step{{cmd("ECHO", "x y"), bulk("x y")}} }, false},
		{"hello 3, then RESP3 replies", func(_ string, id int64) []step {
			return []step{{cmd("HELLO", "3"), helloReply(3, id)}, {cmd("PING"), "+PONG\r\n"}, {cmd("CLIENT", "GETNAME"), "_\r\n"}}
		}, false},
		{"hello 2", func(_ string, id int64) []step {
			return []step{{cmd("HELLO", "2"), helloReply(2, id)}, {cmd("CLIENT", "GETNAME"), "$-1\r\n"}}
		}, false},
		{"hello without version keeps RESP2", func(_ string, id int64) []step { return []step{{cmd("HELLO"), helloReply(2, id)}} }, false},
		{"hello 3 setname", func(_ string, id int64) []step {
			return []step{{cmd("HELLO", "3", "SETNAME", "calendar"), helloReply(3, id)}, {cmd("CLIENT", "GETNAME"), bulk("calendar")}}
		}, false},
		{"hello errors", func(string, int64) []step {
			return []step{
				{cmd("HELLO", "4"), "-NOPROTO unsupported protocol version\r\n"},
				{cmd("HELLO", "x"), "-ERR Protocol version is not an integer or out of range\r\n"},
				{cmd("HELLO", "3", "FOO"), "-ERR Syntax error in HELLO option 'FOO'\r\n"},
			}
		}, false},
		{"auth without a token configured", func(_ string, id int64) []step {
			return []step{{cmd("AUTH", "secret"), "+OK\r\n"}, {cmd("AUTH", "default", "secret"), "+OK\r\n"},
				{cmd("HELLO", "3", "AUTH", "default", "secret"), helloReply(3, id)}}
		}, false},
		{"select", func(string, int64) []step {
			return []step{
				{cmd("SELECT", "0"), "+OK\r\n"},
				{cmd("SELECT", "1"), "-ERR DB index is out of range\r\n"},
				{cmd("SELECT", "x"), "-ERR value is not an integer or out of range\r\n"},
			}
		}, false},
		{"client setname, setinfo, maint_notifications, id", func(_ string, id int64) []step {
			return []step{
				{cmd("CLIENT", "SETNAME", "proc"), "+OK\r\n"},
				{cmd("CLIENT", "GETNAME"), bulk("proc")},
				{cmd("CLIENT", "SETNAME", "a b"), "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
				{cmd("CLIENT", "SETINFO", "LIB-NAME", "redis-py"), "+OK\r\n"},
				{cmd("CLIENT", "SETINFO", "LIB-VER", "8.1.0"), "+OK\r\n"},
				{cmd("CLIENT", "SETINFO", "FOO", "x"), "-ERR Unrecognized option 'FOO'\r\n"},
				{cmd("CLIENT", "MAINT_NOTIFICATIONS", "ON", "moving-endpoint-type", "internal-ip"),
					"-ERR unknown subcommand 'MAINT_NOTIFICATIONS'. Try CLIENT HELP.\r\n"},
				{cmd("CLIENT", "ID"), integer(id)},
			}
		}, false},
		{"command docs", func(string, int64) []step {
			return []step{{cmd("COMMAND", "DOCS"), array(0)}, {cmd("COMMAND"), array(0)}}
		}, false},
		{"unknown command", func(string, int64) []step {
			return []step{
				{cmd("XADD", "k", "*", "f", "v"), "-ERR unknown command 'XADD', with args beginning with: 'k' '*' 'f' 'v' \r\n"},
				{cmd("FLUSHALL"), "-ERR unknown command 'FLUSHALL', with args beginning with: \r\n"},
			}
		}, false},
		{"publish errors", func(topic string, _ int64) []step {
			return []step{
				{cmd("PUBLISH", topic), "-ERR wrong number of arguments for 'publish' command\r\n"},
				{cmd("PUBLISH", "no spaces", "x"), "-ERR " + event.ValidateTopic("no spaces").Error() + "\r\n"},
				{cmd("SUBSCRIBE", "a/b"), "-ERR " + event.ValidateTopic("a/b").Error() + "\r\n"},
			}
		}, false},
		{"RESP2 subscribed mode", func(topic string, _ int64) []step {
			return []step{
				{cmd("SUBSCRIBE", topic), sub("subscribe", topic, 1)},
				{cmd("PING"), array(2) + bulk("pong") + bulk("")},
				{cmd("PING", "redis-py-health-check"), array(2) + bulk("pong") + bulk("redis-py-health-check")},
				{cmd("PUBLISH", topic, "x"), notInContext},
				{cmd("UNSUBSCRIBE"), sub("unsubscribe", topic, 0)},
				{cmd("PING"), "+PONG\r\n"},
				{cmd("UNSUBSCRIBE"), array(3) + bulk("unsubscribe") + "$-1\r\n" + integer(0)},
			}
		}, false},
		{"RESP3 subscribed mode", func(topic string, id int64) []step {
			return []step{
				{cmd("HELLO", "3"), helloReply(3, id)},
				{cmd("SUBSCRIBE", topic), sub3("subscribe", topic, 1)},
				{cmd("PING"), "+PONG\r\n"},
				{cmd("PING", "redis-py-health-check"), bulk("redis-py-health-check")},
				{cmd("CLIENT", "ID"), integer(id)},
				{cmd("UNSUBSCRIBE", topic), sub3("unsubscribe", topic, 0)},
				{cmd("UNSUBSCRIBE"), push(3) + bulk("unsubscribe") + "_\r\n" + integer(0)},
			}
		}, false},
		{"two SUBSCRIBE commands, then several at once", func(topic string, _ int64) []step {
			a, b, c, p := topic+".a", topic+".b", topic+".c", topic+".*"
			return []step{
				{cmd("SUBSCRIBE", a), sub("subscribe", a, 1)},
				{cmd("SUBSCRIBE", b), sub("subscribe", b, 2)},
				{cmd("SUBSCRIBE", b, c), sub("subscribe", b, 2) + sub("subscribe", c, 3)},
				{cmd("PSUBSCRIBE", p), sub("psubscribe", p, 4)},
				{cmd("UNSUBSCRIBE"), sub("unsubscribe", a, 3) + sub("unsubscribe", b, 2) + sub("unsubscribe", c, 1)},
				{cmd("PUNSUBSCRIBE", p), sub("punsubscribe", p, 0)},
			}
		}, false},
		{"reset leaves subscribed mode", func(topic string, id int64) []step {
			return []step{
				{cmd("HELLO", "3", "SETNAME", "x"), helloReply(3, id)},
				{cmd("SUBSCRIBE", topic), sub3("subscribe", topic, 1)},
				{cmd("RESET"), "+RESET\r\n"},
				{cmd("CLIENT", "GETNAME"), "$-1\r\n"},
			}
		}, false},
		{"quit", func(string, int64) []step { return []step{{cmd("QUIT"), "+OK\r\n"}} }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.raw(t)
			runSteps(r, tc.steps(newTopic(t, "proto"), r.id))
			if tc.quit {
				r.expectClosed("after QUIT")
			}
		})
	}
}

// TestInlineCommand: a telnet-style command line (nc, telnet) works too.
func TestInlineCommand(t *testing.T) {
	f := start(t, fixtureOpts{})
	r := f.raw(t)
	if _, err := r.nc.Write([]byte("PING\r\nECHO \"a b\"\r\n")); err != nil {
		t.Fatal(err)
	}
	r.expect("inline PING, ECHO", "+PONG\r\n"+bulk("a b"))
}

// TestAuth: with a token set, only AUTH / HELLO … AUTH (and QUIT, RESET)
// are answered before the token is given.
func TestAuth(t *testing.T) {
	f := start(t, fixtureOpts{token: "s3cret"})
	noauth := "-NOAUTH Authentication required.\r\n"
	wrongpass := "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
	cases := []struct {
		name  string
		steps func(topic string, id int64) []step
	}{
		{"commands before auth", func(topic string, _ int64) []step {
			return []step{{cmd("PING"), noauth}, {cmd("PUBLISH", topic, "x"), noauth}, {cmd("SUBSCRIBE", topic), noauth},
				{cmd("CLIENT", "SETINFO", "LIB-NAME", "redis-py"), noauth}}
		}},
		{"hello without auth", func(string, int64) []step {
			return []step{{cmd("HELLO", "3"),
				"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"}}
		}},
		{"wrong token", func(string, int64) []step {
			return []step{{cmd("AUTH", "nope"), wrongpass}, {cmd("AUTH", "default", "nope"), wrongpass}, {cmd("PING"), noauth}}
		}},
		{"auth token", func(string, int64) []step {
			return []step{{cmd("AUTH", "s3cret"), "+OK\r\n"}, {cmd("PING"), "+PONG\r\n"}}
		}},
		{"auth any user with the token", func(string, int64) []step {
			return []step{{cmd("AUTH", "calendar", "s3cret"), "+OK\r\n"}, {cmd("PING"), "+PONG\r\n"}}
		}},
		{"hello auth", func(_ string, id int64) []step {
			return []step{{cmd("HELLO", "3", "AUTH", "default", "s3cret"), helloReply(3, id)}, {cmd("PING"), "+PONG\r\n"}}
		}},
		{"hello wrong auth", func(string, int64) []step {
			return []step{{cmd("HELLO", "3", "AUTH", "default", "x"), wrongpass}, {cmd("PING"), noauth}}
		}},
		{"reset forgets auth", func(string, int64) []step {
			return []step{{cmd("AUTH", "s3cret"), "+OK\r\n"}, {cmd("RESET"), "+RESET\r\n"}, {cmd("PING"), noauth}}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.raw(t)
			runSteps(r, tc.steps(newTopic(t, "auth"), r.id))
		})
	}

	t.Run("go-redis", func(t *testing.T) {
		ctx := context.Background()
		for _, proto := range []int{2, 3} {
			if got, err := f.client(t, proto, "s3cret").Ping(ctx).Result(); err != nil || got != "PONG" {
				t.Errorf("RESP%d with the token: got %q, %v; want PONG", proto, got, err)
			}
			err := f.client(t, proto, "").Ping(ctx).Err()
			if err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
				t.Errorf("RESP%d without the token: got %v, want NOAUTH", proto, err)
			}
			err = f.client(t, proto, "wrong").Ping(ctx).Err()
			if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
				t.Errorf("RESP%d with a wrong token: got %v, want WRONGPASS", proto, err)
			}
		}
	})
	t.Run("redis-cli", func(t *testing.T) {
		if got := f.redisCLI(t, "--no-auth-warning", "-a", "s3cret", "PING"); got != "PONG" {
			t.Errorf("redis-cli -a token PING: got %q, want PONG", got)
		}
		if got := f.redisCLI(t, "PING"); !strings.Contains(got, "NOAUTH Authentication required.") {
			t.Errorf("redis-cli PING without token: got %q, want NOAUTH", got)
		}
	})
}

// TestGoRedisHandshake: go-redis v9 connects in RESP3 (its default) and
// RESP2, with a client name and db 0, and reads HELLO's map.
func TestGoRedisHandshake(t *testing.T) {
	f := start(t, fixtureOpts{})
	ctx := context.Background()
	for _, proto := range []int{3, 2} {
		t.Run(fmt.Sprintf("RESP%d", proto), func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: f.addr, Protocol: proto, ClientName: "calendar", DB: 0, MaxRetries: -1})
			defer c.Close()
			if got, err := c.Ping(ctx).Result(); err != nil || got != "PONG" {
				t.Fatalf("PING: got %q, %v; want PONG", got, err)
			}
			if got, err := c.ClientGetName(ctx).Result(); err != nil || got != "calendar" {
				t.Errorf("CLIENT GETNAME: got %q, %v; want calendar", got, err)
			}
			hello, err := c.Do(ctx, "HELLO", proto).Result()
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]any{}
			switch v := hello.(type) {
			case map[any]any:
				for k, val := range v {
					m[fmt.Sprint(k)] = val
				}
			case []any:
				for i := 0; i+1 < len(v); i += 2 {
					m[fmt.Sprint(v[i])] = v[i+1]
				}
			}
			if m["proto"] != int64(proto) || m["server"] != "redis" || m["version"] != redisVersion {
				t.Errorf("HELLO %d: got %v, want proto %d, server redis, version %s", proto, hello, proto, redisVersion)
			}
			info, err := c.Info(ctx).Result()
			if err != nil || !strings.Contains(info, "redis_version:"+redisVersion) {
				t.Errorf("INFO: got %q, %v", info, err)
			}
			err = c.Do(ctx, "XADD", "k", "*", "f", "v").Err()
			if want := "ERR unknown command 'XADD', with args beginning with: 'k' '*' 'f' 'v' "; err == nil || err.Error() != want {
				t.Errorf("XADD: got %v, want %q", err, want)
			}
		})
	}
}

// TestPublishEvent: what a PUBLISH becomes in the topic's stream.
func TestPublishEvent(t *testing.T) {
	f := start(t, fixtureOpts{})
	envelope := `{"message_id": "6f1c2b9e-1d7a-4c55-9b1e-0b7c6f0e9a11", "timestamp": "2025-10-17T10:40:10.123456Z", "source": "match-list-processor", "version": "1.0", "type": "match_updates", "payload": {"matches": [{"matchid": 6169105, "lag1namn": "IFK Göteborg"}]}}`
	cases := []struct {
		name, msg           string
		wantType, wantCT    string
		wantID              string // "" = a new ULID
		wantIDNotFromJSONOK bool
	}{
		{"FOGIS envelope", envelope, "match_updates", "application/json", "6f1c2b9e-1d7a-4c55-9b1e-0b7c6f0e9a11", false},
		{"plain text", "hello world", "{t}", "application/octet-stream", "", false},
		{"binary", "\x00\xff\xfe\r\n", "{t}", "application/octet-stream", "", false},
		{"JSON array", `[1,2,3]`, "{t}", "application/json", "", false},
		{"JSON string", `"x"`, "{t}", "application/json", "", false},
		{"JSON object without envelope", `{"a":1}`, "{t}", "application/json", "", false},
		{"non-string type and id", `{"type":5,"message_id":7}`, "{t}", "application/json", "", false},
		{"message_id with a newline", `{"type":"t1","message_id":"a\nb"}`, "t1", "application/json", "", false},
		{"empty message", "", "{t}", "application/octet-stream", "", false},
	}
	c := f.client(t, 3, "")
	ctx := context.Background()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := newTopic(t, "pub")
			n, err := c.Publish(ctx, topic, tc.msg).Result()
			if err != nil || n != 1 {
				t.Fatalf("PUBLISH: got %d, %v; want 1 (no group yet: at least 1)", n, err)
			}
			evs := f.entries(t, topic)
			if len(evs) != 1 {
				t.Fatalf("got %d entries, want 1", len(evs))
			}
			ev := evs[0]
			wantType := strings.ReplaceAll(tc.wantType, "{t}", topic)
			if string(ev.Data) != tc.msg || ev.Type != wantType || ev.ContentType != tc.wantCT || ev.Source != "processor" {
				t.Errorf("got data %q type %q content type %q source %q, want %q %q %q processor",
					ev.Data, ev.Type, ev.ContentType, ev.Source, tc.msg, wantType, tc.wantCT)
			}
			if tc.wantID != "" && ev.ID != tc.wantID {
				t.Errorf("id: got %q, want %q", ev.ID, tc.wantID)
			}
			if tc.wantID == "" && len(ev.ID) != 26 {
				t.Errorf("id: got %q, want a new ULID", ev.ID)
			}
		})
	}

	t.Run("reply counts the topic's groups", func(t *testing.T) {
		topic := newTopic(t, "groups")
		for _, g := range []string{"calendar", "audit"} {
			if err := f.rdb.XGroupCreateMkStream(ctx, "sidecar:{"+topic+"}", g, "$").Err(); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := c.Publish(ctx, topic, "x").Result(); err != nil || n != 2 {
			t.Errorf("PUBLISH: got %d, %v; want 2", n, err)
		}
	})
	t.Run("redis-cli", func(t *testing.T) {
		topic := newTopic(t, "cli")
		if got := f.redisCLI(t, "PING"); got != "PONG" {
			t.Errorf("redis-cli PING: got %q, want PONG", got)
		}
		if got := f.redisCLI(t, "PUBLISH", topic, `{"type":"x"}`); got != "1" {
			t.Errorf("redis-cli PUBLISH: got %q, want 1", got)
		}
		if evs := f.entries(t, topic); len(evs) != 1 || string(evs[0].Data) != `{"type":"x"}` {
			t.Errorf("stream after redis-cli PUBLISH: got %v", evs)
		}
		if got := f.redisCLI(t, "FOO", "bar"); got != "ERR unknown command 'FOO', with args beginning with: 'bar'" {
			t.Errorf("redis-cli FOO: got %q", got)
		}
		if got := f.redisCLI(t, "-3", "PING"); got != "PONG" {
			t.Errorf("redis-cli -3 PING: got %q, want PONG", got)
		}
	})
}

// TestPublishReply: the reply is the group count, 1 when spooled or when
// counting fails; a refused publish is an error reply.
func TestPublishReply(t *testing.T) {
	cases := []struct {
		name    string
		pub     *fakePublisher
		streams fakeStreams
		want    int64
		wantErr string
	}{
		{"three groups", &fakePublisher{}, fakeStreams{groups: 3}, 3, ""},
		{"no group yet", &fakePublisher{}, fakeStreams{groups: 0}, 1, ""},
		{"count fails", &fakePublisher{}, fakeStreams{err: errors.New("down")}, 1, ""},
		{"spooled", &fakePublisher{spool: true}, fakeStreams{groups: 5}, 1, ""},
		{"refused", &fakePublisher{err: errors.New("redis is unavailable and the spool is full: full")}, fakeStreams{},
			0, "ERR redis is unavailable and the spool is full: full"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := start(t, fixtureOpts{pub: tc.pub, streams: tc.streams})
			n, err := f.client(t, 2, "").Publish(context.Background(), "orders", "x").Result()
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("got %d, %v; want error %q", n, err, tc.wantErr)
				}
				return
			}
			if err != nil || n != tc.want {
				t.Fatalf("got %d, %v; want %d", n, err, tc.want)
			}
		})
	}
}

// TestPublishWhileRedisDown: the client gets its integer reply, the event
// waits in the spool, and reaches the stream when Redis is back.
func TestPublishWhileRedisDown(t *testing.T) {
	f := start(t, fixtureOpts{process: true})
	ctx := context.Background()
	topic := newTopic(t, "down")
	c := f.client(t, 3, "")
	f.redis.Kill()
	msgs := []string{`{"message_id":"m1","type":"match_updates"}`, `{"message_id":"m2","type":"match_updates"}`, "third"}
	for _, m := range msgs {
		start := time.Now()
		n, err := c.Publish(ctx, topic, m).Result()
		if err != nil || n != 1 {
			t.Fatalf("PUBLISH while Redis is down: got %d, %v; want 1", n, err)
		}
		t.Logf("PUBLISH answered in %v while Redis was down", time.Since(start).Round(time.Millisecond))
	}
	if st := f.spool.Stats(); st.Events != len(msgs) {
		t.Fatalf("spool: got %d events, want %d", st.Events, len(msgs))
	}
	f.redis.Restart()
	eventually.True(t, 15*time.Second, "the spooled events in the stream", func() bool {
		msgs, err := f.rdb.XLen(ctx, "sidecar:{"+topic+"}").Result()
		return err == nil && msgs == 3
	})
	evs := f.entries(t, topic)
	for i, m := range msgs {
		if string(evs[i].Data) != m {
			t.Errorf("entry %d: got %q, want %q", i, evs[i].Data, m)
		}
	}
	if evs[0].ID != "m1" || evs[1].ID != "m2" {
		t.Errorf("ids: got %q %q, want m1 m2 (the envelopes' message_id)", evs[0].ID, evs[1].ID)
	}
}

// TestLimits: an oversized message is refused; a command larger than any
// allowed ends the connection instead of filling memory.
func TestLimits(t *testing.T) {
	pub := &fakePublisher{}
	f := start(t, fixtureOpts{pub: pub, streams: fakeStreams{groups: 1}, max: 10})
	r := f.raw(t)
	r.send("PUBLISH", "t", "01234567890")
	r.expect("PUBLISH 11 bytes", "-ERR message is 11 bytes; at most 10\r\n")
	r.send("PUBLISH", "t", strings.Repeat("x", maxFrame+100))
	r.expect("a huge command", fmt.Sprintf("-ERR Protocol error: command larger than %d bytes\r\n", 10+maxFrame))
	r.expectClosed("after a huge command")
}

// TestShutdown: Run returns once ctx ends, closing clients, subscribed
// ones included.
func TestShutdown(t *testing.T) {
	r := redistest.Start(t)
	rdb := r.Client(t)
	srv, err := New("127.0.0.1:0", Config{Service: "p", Grace: time.Second}, &fakePublisher{},
		NewRedis(rdb, RedisConfig{Group: "g", Consumer: "c", Grace: time.Second}, zerolog.Nop()), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(srv.Addr().String(), Config{}, nil, nil, zerolog.Nop()); err == nil {
		t.Error("New on a bound address: got nil, want an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	nc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
	rc.send("SUBSCRIBE", newTopic(t, "shut"))
	rc.expect("subscribe", array(3)+bulk("subscribe"))
	inc, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer inc.Close()
	idle := &raw{t: t, nc: inc, br: bufio.NewReader(inc)}
	begin := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
	t.Logf("Run returned %v after cancel", time.Since(begin).Round(time.Millisecond))
	idle.expectClosed("idle client after shutdown")
	if _, err := net.DialTimeout("tcp", srv.Addr().String(), time.Second); err == nil {
		t.Error("the listener still accepts after Run returned")
	}
}

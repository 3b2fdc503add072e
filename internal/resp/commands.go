package resp

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
)

// redisVersion is the Redis version the ingress answers as (HELLO, INFO):
// the command surface clients may rely on (HELLO, RESP3, CLIENT SETINFO).
const redisVersion = "7.2.0"

// noAuth are the commands a client may send before AUTH, as in Redis.
var noAuth = map[string]bool{"auth": true, "hello": true, "quit": true, "reset": true}

// inSubscribe are the commands a RESP2 connection may send while it
// listens to channels; Redis refuses others in that context.
var inSubscribe = map[string]bool{
	"subscribe": true, "unsubscribe": true, "psubscribe": true, "punsubscribe": true,
	"ping": true, "quit": true, "reset": true,
}

// exec runs one command and writes its reply; true means close the
// connection (QUIT).
func (c *client) exec(ctx context.Context, cmd redcon.Command) (quit bool) {
	name := strings.ToLower(string(cmd.Args[0]))
	args := cmd.Args[1:]
	// The name only: arguments may hold a token or a message.
	c.log.Trace().Str("cmd", name).Int("args", len(args)).Msg("command")
	if !c.authed && !noAuth[name] {
		c.write(func(o out) { o.err("NOAUTH Authentication required.") })
		return false
	}
	if !inSubscribe[name] && c.proto == 2 && c.subscriptions() > 0 {
		c.write(func(o out) {
			o.err("ERR Can't execute '" + name + "': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
		})
		return false
	}
	switch name {
	case "ping":
		c.ping(args)
	case "echo":
		if c.arity(name, args, 1, 1) {
			c.write(func(o out) { o.bulk(args[0]) })
		}
	case "hello":
		c.hello(args)
	case "auth":
		c.auth(args)
	case "select":
		c.selectDB(args)
	case "client":
		c.clientCmd(args)
	case "command":
		c.command(args)
	case "info":
		c.info()
	case "quit":
		c.write(func(o out) { o.ok() })
		return true
	case "reset":
		c.reset()
	case "publish":
		if c.arity(name, args, 2, 2) {
			c.publish(ctx, string(args[0]), args[1])
		}
	case "subscribe", "psubscribe":
		if c.arity(name, args, 1, -1) {
			c.subscribe(name == "psubscribe", strs(args))
		}
	case "unsubscribe", "punsubscribe":
		c.unsubscribe(name == "punsubscribe", strs(args))
	default:
		c.write(func(o out) { o.err(unknownCommand(cmd.Args)) })
	}
	return false
}

// arity checks the argument count (max -1: no limit) and answers Redis's
// error when it is wrong.
func (c *client) arity(name string, args [][]byte, lo, hi int) bool {
	if len(args) < lo || (hi >= 0 && len(args) > hi) {
		c.write(func(o out) { o.err("ERR wrong number of arguments for '" + name + "' command") })
		return false
	}
	return true
}

// unknownCommand is Redis 7's error text for a command it does not have.
func unknownCommand(argv [][]byte) string {
	var b strings.Builder
	for _, a := range argv[1:] {
		if b.Len() >= 128 {
			break
		}
		fmt.Fprintf(&b, "'%s' ", clip(string(a), 128-b.Len()))
	}
	return fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", clip(string(argv[0]), 128), b.String())
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func strs(args [][]byte) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = string(a)
	}
	return out
}

// ping answers PONG (or the message); a RESP2 connection in subscribed
// mode gets Redis's array ["pong", message] — redis-py's health check
// while subscribed expects exactly that.
func (c *client) ping(args [][]byte) {
	if !c.arity("ping", args, 0, 1) {
		return
	}
	subscribed := c.subscriptions() > 0
	c.write(func(o out) {
		switch {
		case subscribed && o.proto == 2:
			o.array(2)
			o.bulkString("pong")
			if len(args) == 1 {
				o.bulk(args[0])
			} else {
				o.bulkString("")
			}
		case len(args) == 1:
			o.bulk(args[0])
		default:
			o.status("PONG")
		}
	})
}

// hello switches the protocol version (and authenticates, and names the
// connection) and answers the server's description: a RESP3 map when
// version 3 is chosen — redis-py 8 refuses a connection otherwise.
func (c *client) hello(args [][]byte) {
	proto := c.proto
	if len(args) > 0 {
		v, err := strconv.Atoi(string(args[0]))
		if err != nil {
			c.write(func(o out) { o.err("ERR Protocol version is not an integer or out of range") })
			return
		}
		if v != 2 && v != 3 {
			c.write(func(o out) { o.err("NOPROTO unsupported protocol version") })
			return
		}
		proto = v
		args = args[1:]
	}
	var (
		pass    []byte
		hasAuth bool
		name    string
		setName bool
	)
	for len(args) > 0 {
		opt := strings.ToLower(string(args[0]))
		switch {
		case opt == "auth" && len(args) >= 3:
			pass, hasAuth = args[2], true
			args = args[3:]
		case opt == "setname" && len(args) >= 2:
			name, setName = string(args[1]), true
			args = args[2:]
		default:
			c.write(func(o out) { o.err("ERR Syntax error in HELLO option '" + string(args[0]) + "'") })
			return
		}
	}
	if hasAuth && !c.checkPass(pass) {
		c.write(func(o out) { o.err("WRONGPASS invalid username-password pair or user is disabled.") })
		return
	}
	if !c.authed && !hasAuth {
		c.write(func(o out) {
			o.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
		})
		return
	}
	if setName {
		if !validName(name) {
			c.write(func(o out) { o.err("ERR Client names cannot contain spaces, newlines or special characters.") })
			return
		}
		c.name = name
	}
	if hasAuth {
		c.authed = true
	}
	c.mu.Lock()
	c.proto = proto
	c.mu.Unlock()
	c.write(func(o out) {
		o.mapOf(7)
		o.bulkString("server")
		o.bulkString("redis")
		o.bulkString("version")
		o.bulkString(redisVersion)
		o.bulkString("proto")
		o.integer(int64(proto))
		o.bulkString("id")
		o.integer(c.id)
		o.bulkString("mode")
		o.bulkString("standalone")
		o.bulkString("role")
		o.bulkString("master")
		o.bulkString("modules")
		o.array(0)
	})
}

// auth checks the token: AUTH <token> or AUTH <any user> <token>. With no
// token configured every AUTH succeeds (Redis would refuse the one-argument
// form): redis-py sends AUTH only when REDIS_URL has a password, and the
// URL an operator points at the sidecar is often the old Redis URL with its
// password — refusing would break the connection and protect nothing.
func (c *client) auth(args [][]byte) {
	if !c.arity("auth", args, 1, 2) {
		return
	}
	if !c.checkPass(args[len(args)-1]) {
		c.write(func(o out) { o.err("WRONGPASS invalid username-password pair or user is disabled.") })
		return
	}
	c.authed = true
	c.write(func(o out) { o.ok() })
}

func (c *client) checkPass(pass []byte) bool {
	tok := c.s.cfg.Token
	return tok == "" || subtle.ConstantTimeCompare(pass, []byte(tok)) == 1
}

// selectDB accepts database 0 only: the sidecar has one topic namespace.
func (c *client) selectDB(args [][]byte) {
	if !c.arity("select", args, 1, 1) {
		return
	}
	n, err := strconv.Atoi(string(args[0]))
	c.write(func(o out) {
		switch {
		case err != nil:
			o.err("ERR value is not an integer or out of range")
		case n != 0:
			o.err("ERR DB index is out of range")
		default:
			o.ok()
		}
	})
}

// clientCmd answers the CLIENT subcommands clients send while connecting.
// Others (MAINT_NOTIFICATIONS from redis-py 8 among them) get Redis's
// unknown-subcommand error, which the clients tolerate.
func (c *client) clientCmd(args [][]byte) {
	if !c.arity("client", args, 1, -1) {
		return
	}
	sub := strings.ToLower(string(args[0]))
	rest := args[1:]
	switch sub {
	case "id":
		c.write(func(o out) { o.integer(c.id) })
	case "getname":
		c.write(func(o out) {
			if c.name == "" {
				o.null()
			} else {
				o.bulkString(c.name)
			}
		})
	case "setname":
		if !c.arity("client|setname", rest, 1, 1) {
			return
		}
		if !validName(string(rest[0])) {
			c.write(func(o out) { o.err("ERR Client names cannot contain spaces, newlines or special characters.") })
			return
		}
		c.name = string(rest[0])
		c.write(func(o out) { o.ok() })
	case "setinfo":
		if !c.arity("client|setinfo", rest, 2, 2) {
			return
		}
		switch strings.ToLower(string(rest[0])) {
		case "lib-name", "lib-ver":
			c.write(func(o out) { o.ok() })
		default:
			c.write(func(o out) { o.err("ERR Unrecognized option '" + string(rest[0]) + "'") })
		}
	default:
		c.write(func(o out) {
			o.err("ERR unknown subcommand '" + clip(string(args[0]), 128) + "'. Try CLIENT HELP.")
		})
	}
}

// validName is Redis's rule for client names: printable, no spaces.
func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '!' || s[i] > '~' {
			return false
		}
	}
	return true
}

// command answers COMMAND and its subcommands (redis-cli asks for DOCS
// to offer hints) with nothing: clients then use their built-in tables.
func (c *client) command(args [][]byte) {
	sub := ""
	if len(args) > 0 {
		sub = strings.ToLower(string(args[0]))
	}
	c.write(func(o out) {
		switch sub {
		case "count":
			o.integer(0)
		case "docs":
			o.mapOf(0)
		default:
			o.array(0)
		}
	})
}

// info is a minimal server section, enough for clients that read the
// version or wait for loading:0.
func (c *client) info() {
	_, port, _ := net.SplitHostPort(c.s.ln.Addr().String())
	txt := "# Server\r\n" +
		"redis_version:" + redisVersion + "\r\n" +
		"redis_mode:standalone\r\n" +
		"sidecar_version:" + c.s.cfg.Version + "\r\n" +
		"process_id:" + strconv.Itoa(os.Getpid()) + "\r\n" +
		"tcp_port:" + port + "\r\n" +
		"\r\n# Persistence\r\nloading:0\r\n" +
		"\r\n# Replication\r\nrole:master\r\n"
	c.write(func(o out) { o.bulkString(txt) })
}

// reset returns the connection to its initial state, as Redis's RESET:
// no subscriptions, RESP2, no name, and unauthenticated when a token is set.
func (c *client) reset() {
	c.s.hub.leaveAll(c)
	c.mu.Lock()
	c.proto = 2
	c.mu.Unlock()
	c.name = ""
	c.authed = c.s.cfg.Token == ""
	c.write(func(o out) { o.status("RESET") })
}

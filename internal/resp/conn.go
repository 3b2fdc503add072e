package resp

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/redcon"
)

// client is one connection: its goroutine reads and executes commands;
// feeds write Pub/Sub messages to it concurrently, under mu.
type client struct {
	s   *Server
	id  int64
	log zerolog.Logger
	nc  net.Conn
	rd  *redcon.Reader
	lim *limitReader

	// mu guards the writer and the state a delivery reads: the protocol
	// version and the subscriptions. Each hold writes whole frames only.
	mu       sync.Mutex
	w        *redcon.Writer
	proto    int
	broken   bool // a write failed; the connection is closing
	channels map[string]struct{}
	patterns map[string]struct{}

	// Owned by the connection's goroutine.
	authed bool
	name   string
}

func (s *Server) newClient(nc net.Conn) *client {
	lim := &limitReader{r: nc}
	id := s.nextID.Add(1)
	return &client{
		s:        s,
		id:       id,
		log:      s.log.With().Int64("client", id).Str("remote", nc.RemoteAddr().String()).Logger(),
		nc:       nc,
		lim:      lim,
		rd:       redcon.NewReader(lim),
		w:        redcon.NewWriter(nc),
		proto:    2,
		authed:   s.cfg.Token == "",
		channels: map[string]struct{}{},
		patterns: map[string]struct{}{},
	}
}

// maxFrame is what a command may need beyond its message: the command
// name, the channel and the framing.
const maxFrame = 64 << 10

// serve reads and executes commands until the client leaves, a write
// fails, or run ends. cmdCtx outlives run, so a command under way at
// shutdown still gets its reply.
func (c *client) serve(cmdCtx, run context.Context) {
	log := c.log
	log.Debug().Msg("client connected")
	defer func() {
		c.s.hub.leaveAll(c)
		_ = c.nc.Close()
		log.Debug().Msg("client disconnected")
	}()
	for run.Err() == nil {
		c.lim.left = int64(c.s.cfg.MaxMessage) + maxFrame
		cmds, err := c.rd.ReadCommands()
		if err != nil {
			switch {
			case errors.Is(err, errTooLarge):
				c.write(func(o out) {
					o.err("ERR Protocol error: command larger than " + strconv.Itoa(c.s.cfg.MaxMessage+maxFrame) + " bytes")
				})
				c.flush()
			case strings.HasPrefix(err.Error(), "Protocol error"):
				c.write(func(o out) { o.err("ERR " + err.Error()) })
				c.flush()
			case !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && run.Err() == nil:
				log.Debug().Err(err).Msg("client read failed")
			}
			return
		}
		for _, cmd := range cmds {
			if run.Err() != nil {
				break // shutting down: later pipelined commands are not started
			}
			if quit := c.exec(cmdCtx, cmd); quit {
				c.flush()
				return
			}
		}
		if !c.flush() {
			return
		}
	}
}

// write runs f with the writer under the lock; f writes whole replies.
func (c *client) write(f func(o out)) {
	c.mu.Lock()
	f(out{w: c.w, proto: c.proto})
	c.mu.Unlock()
}

// flush sends what is buffered; false when the connection is broken.
func (c *client) flush() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *client) flushLocked() bool {
	if c.broken {
		return false
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if err := c.w.Flush(); err != nil {
		// A client that does not read (or is gone) is cut off, so it
		// holds up neither its topics nor the server; its goroutine sees
		// the closed connection and cleans up.
		c.broken = true
		_ = c.nc.Close()
		c.log.Debug().Err(err).Msg("client write failed; closing the connection")
		return false
	}
	return true
}

// subscriptions is how many channels and patterns the client listens to.
func (c *client) subscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.channels) + len(c.patterns)
}

// out writes replies in the connection's protocol version: RESP2 through
// redcon's writers, RESP3's own types (map, push, null) raw.
type out struct {
	w     *redcon.Writer
	proto int
}

func (o out) ok()                 { o.w.WriteString("OK") }
func (o out) status(s string)     { o.w.WriteString(s) }
func (o out) err(msg string)      { o.w.WriteError(msg) }
func (o out) bulk(b []byte)       { o.w.WriteBulk(b) }
func (o out) bulkString(s string) { o.w.WriteBulkString(s) }
func (o out) integer(n int64)     { o.w.WriteInt64(n) }
func (o out) array(n int)         { o.w.WriteArray(n) }
func (o out) raw(prefix byte, n int) {
	o.w.WriteRaw(strconv.AppendInt([]byte{prefix}, int64(n), 10))
	o.w.WriteRaw(crlf)
}

var crlf = []byte("\r\n")

// null is RESP2's null bulk string or RESP3's null.
func (o out) null() {
	if o.proto == 3 {
		o.w.WriteRaw([]byte("_\r\n"))
		return
	}
	o.w.WriteNull()
}

// mapOf starts a map of n pairs: RESP3 '%', RESP2 a flat array.
func (o out) mapOf(n int) {
	if o.proto == 3 {
		o.raw('%', n)
		return
	}
	o.w.WriteArray(2 * n)
}

// push starts an out-of-band message (Pub/Sub): RESP3 '>', RESP2 an array.
func (o out) push(n int) {
	if o.proto == 3 {
		o.raw('>', n)
		return
	}
	o.w.WriteArray(n)
}

// errTooLarge ends a connection whose command exceeds the size limit.
var errTooLarge = errors.New("command too large")

// limitReader bounds the bytes read for one batch of commands, so a client
// cannot make the reader buffer an endless bulk string.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

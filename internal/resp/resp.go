// Package resp provides the Redis-protocol ingress: unmodified Redis
// clients (redis-py, go-redis, node-redis, redis-cli) PUBLISH durable
// events and SUBSCRIBE to topics through a consumer group, on a port that
// speaks RESP2 and RESP3. It knows nothing of HTTP.
//
//	client ──PUBLISH ch msg──▶ Server ──Publisher.Publish──▶ stream (or spool while Redis is down)
//	client ◀─message ch data── feed(ch) ◀─Streams.Consume (group = service, in order)── stream
//
// One feed per subscribed topic runs while at least one connection listens
// to it; an event is acknowledged once it was written to a listener, so
// what is published while nobody listens stays pending in the group and is
// delivered when a client subscribes again. The group is durable: a topic
// once subscribed keeps its group (and retention keeps what the group has
// not read) until an operator removes it (XGROUP DESTROY). PSUBSCRIBE
// reads, through the same group, every topic whose stream exists or that
// is published through this port, as it appears.
package resp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/event"
)

// Publisher takes a durable publish (relay.Relay satisfies it): an error
// means the event was not accepted.
type Publisher interface {
	Publish(ctx context.Context, topic string, ev *event.Event) (event.Receipt, error)
}

// Deliver hands one event to the topic's listeners: nil acknowledges it, an
// error leaves it pending in the consumer group, to be offered again.
type Deliver func(ctx context.Context, ev *event.Event) error

// Streams is what the ingress needs of the topic streams. Redis (in this
// package) implements it with consumer groups.
type Streams interface {
	// Groups counts the consumer groups of a topic: PUBLISH's reply.
	Groups(ctx context.Context, topic string) (int, error)
	// Consume reads topic through the consumer group, one event at a time in
	// stream order (pending ones first), until ctx is done.
	Consume(ctx context.Context, topic string, deliver Deliver) error
	// Topics lists the topics that have a stream, for PSUBSCRIBE patterns.
	Topics(ctx context.Context) ([]string, error)
}

// Config is the ingress's behaviour; zero values take the defaults.
type Config struct {
	// Service is the source of published events.
	Service string
	// Token, when set, must be given with AUTH (or HELLO … AUTH) before any
	// other command.
	Token string
	// MaxMessage bounds a PUBLISH message (default 1 MiB, like the HTTP API).
	MaxMessage int
	// WriteTimeout bounds a write to a client (default 10 s): a subscriber
	// that stops reading is disconnected, like Redis's pubsub output limit,
	// so it cannot hold up its topics.
	WriteTimeout time.Duration
	// Grace is how long a command under way may finish on shutdown before
	// connections are closed (default 5 s).
	Grace time.Duration
	// Rescan is how often the topic list is read again while a PSUBSCRIBE
	// pattern is active (default 5 s).
	Rescan time.Duration
	// Version is reported by INFO as sidecar_version.
	Version string
	// Reserved are topics this sidecar's own (webhook) subscriptions read
	// through the same group: SUBSCRIBE refuses them and patterns skip
	// them, since two readers under one group and consumer name would
	// split the topic's events between them.
	Reserved []string
}

// Server is the Redis-protocol listener. Run serves it.
type Server struct {
	cfg     Config
	ln      net.Listener
	pub     Publisher
	streams Streams
	log     zerolog.Logger
	hub     *hub

	nextID atomic.Int64
	mu     sync.Mutex
	conns  map[*client]struct{}
	closed bool // Run is shutting down: new connections are refused
}

// New binds addr and returns a Server; Run serves it. A bind failure is
// returned here, so a port conflict fails the start.
func New(addr string, cfg Config, pub Publisher, streams Streams, log zerolog.Logger) (*Server, error) {
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 1 << 20
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Second
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = 5 * time.Second
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("resp listen %s: %w", addr, err)
	}
	s := &Server{cfg: cfg, ln: ln, pub: pub, streams: streams, log: log, conns: map[*client]struct{}{}}
	s.hub = newHub(streams, cfg.Rescan, cfg.Reserved, log)
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run accepts connections until ctx is done. Then it stops reading
// commands, lets a command under way (a PUBLISH waiting for the spool)
// answer within Grace, closes every connection, stops every topic feed
// (what they had not delivered stays pending in the group) and returns.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info().Str("listen", s.ln.Addr().String()).Bool("auth", s.cfg.Token != "").Msg("redis-protocol ingress listening")
	// Commands answer even while shutting down: a PUBLISH that has begun
	// gets its reply (bounded by the publisher's own timeout).
	cmdCtx := context.WithoutCancel(ctx)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var conns, scanner sync.WaitGroup
	s.hub.begin(ctx)
	scanner.Go(func() { s.hub.run(ctx) })
	stop := context.AfterFunc(ctx, func() { _ = s.ln.Close() })
	defer stop()

	err := s.accept(ctx, cmdCtx, &conns)
	cancel()
	s.shutdown(&conns)
	// No client is left to start a feed; those running stop with ctx.
	scanner.Wait()
	s.hub.wait()
	s.log.Info().Msg("redis-protocol ingress stopped")
	return err
}

// accept serves each new connection on its own goroutine until ctx is done
// (nil) or the listener fails.
func (s *Server) accept(ctx, cmdCtx context.Context, conns *sync.WaitGroup) error {
	for failures := 0; ; {
		nc, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("resp: listener closed: %w", err)
			}
			// Out of file descriptors and the like: wait and try again,
			// as net/http does.
			failures++
			wait := min(5*time.Millisecond<<min(failures, 8), time.Second)
			s.log.Warn().Err(err).Dur("retry_in", wait).Msg("resp accept failed")
			select {
			case <-time.After(wait):
				continue
			case <-ctx.Done():
				return nil
			}
		}
		failures = 0
		c := s.newClient(nc)
		if !s.track(c) {
			_ = nc.Close()
			return nil
		}
		conns.Go(func() {
			defer s.untrack(c)
			c.serve(cmdCtx, ctx)
		})
	}
}

// shutdown ends every connection: reads stop at once (a blocked read
// returns), a command under way answers, then the connection closes; past
// Grace the connections are closed regardless.
func (s *Server) shutdown(conns *sync.WaitGroup) {
	s.mu.Lock()
	s.closed = true
	all := make([]*client, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		_ = c.nc.SetReadDeadline(time.Now())
	}
	done := make(chan struct{})
	go func() { conns.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(s.cfg.Grace):
	}
	s.log.Warn().Dur("grace", s.cfg.Grace).Msg("resp shutdown: closing connections with commands under way")
	for _, c := range all {
		_ = c.nc.Close()
	}
	<-done
}

func (s *Server) track(c *client) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *client) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

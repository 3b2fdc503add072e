// Command sidecar runs beside a service and gives it durable pub/sub over
// plain HTTP, on Redis Streams.
//
//	service ──POST /v1/publish/{topic} or a route──▶ API ──▶ Relay ──XADD──▶ sidecar:{topic}   (Redis)
//	                                                     └─ Redis down: Spool (disk) ──drain in order──▶ XADD
//	                                                        └─ fallback: POST peer /v1/inbox/{topic}
//	sidecar:{topic} ──XREADGROUP──▶ Subscriber ──POST──▶ service webhook
//	                 2xx: XACK · 408/429/5xx: retry with backoff · else / exhausted: DLQ + XACK
//	peer ──POST /v1/inbox/{topic}──▶ Inbox ──POST──▶ service webhook (ledger: the stream copy is not delivered again)
//	Redis client ──PUBLISH (resp.listen)──▶ Relay · SUBSCRIBE ──▶ group `service` ──▶ Pub/Sub messages
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	actors "github.com/oklog/run"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/fogis-sidecar/sidecar/internal/admin"
	"github.com/fogis-sidecar/sidecar/internal/backoff"
	"github.com/fogis-sidecar/sidecar/internal/config"
	"github.com/fogis-sidecar/sidecar/internal/console"
	"github.com/fogis-sidecar/sidecar/internal/devredis"
	"github.com/fogis-sidecar/sidecar/internal/event"
	"github.com/fogis-sidecar/sidecar/internal/health"
	"github.com/fogis-sidecar/sidecar/internal/httpbridge"
	"github.com/fogis-sidecar/sidecar/internal/inbox"
	"github.com/fogis-sidecar/sidecar/internal/metrics"
	"github.com/fogis-sidecar/sidecar/internal/relay"
	"github.com/fogis-sidecar/sidecar/internal/resp"
	"github.com/fogis-sidecar/sidecar/internal/spool"
	"github.com/fogis-sidecar/sidecar/internal/stream"
	"github.com/fogis-sidecar/sidecar/internal/tracing"
)

// version is set at build time: -ldflags "-X main.version=…"; a binary
// built by `go install …@vX.Y.Z` reports its module version instead.
// (-X needs a plain string constant here, so main applies that.)
var version = "dev"

// moduleVersion is the main module's version from the build info when it
// is a release (not "(devel)"), else def.
func moduleVersion(def string) string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return def
}

func main() {
	// The sidecar's heap is small and short-lived (per-request buffers): a
	// GC target of 200 % trades a few MB of RSS for ~10 % more throughput
	// (docs/benchmarks.md). An explicit GOGC still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	if version == "dev" {
		version = moduleVersion(version)
	}
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	var exit exitError
	switch {
	case errors.As(err, &exit):
		os.Exit(exit.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "sidecar:", err)
		os.Exit(1)
	}
}

// run is the whole program; main only maps its error to an exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "sidecar", version)
			return nil
		case "config":
			return configCmd(ctx, args[1:], getenv, stdout, stderr)
		case "check":
			return check(ctx, args[1:], getenv, stdout)
		case "health":
			return probe(ctx, args[1:], getenv, stdout)
		case "help", "topics", "events", "dlq", "seek", "pause", "resume", "consumers":
			return cli(ctx, args, getenv, stdout, stderr) // the event-log CLI (cli.go)
		}
	}
	cfg, err := config.Load(args, getenv, config.Hostname(), stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	logger, err := newLogger(cfg, stderr)
	if err != nil {
		return err
	}
	// go-redis logs pool dial failures itself; route them through zerolog at
	// debug, so an outage is reported once by the monitor, not per dial.
	redis.SetLogger(redisLogger{logger.With().Str("component", "go-redis").Logger()})
	return serve(ctx, cfg, logger)
}

// redisLogger adapts zerolog to go-redis's logger.
type redisLogger struct{ l zerolog.Logger }

func (r redisLogger) Printf(_ context.Context, format string, v ...any) {
	r.l.Debug().Msgf(format, v...)
}

// newLogger writes through the configuration's Redactor: a library's
// error that quotes a URL, or a webhook's reply, never puts a credential
// in the log.
func newLogger(cfg *config.Config, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(cfg.LogLevel)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("log.level: %w", err)
	}
	// Durations as "1.5s", "250ms": a bare number leaves the reader to
	// guess its unit.
	zerolog.DurationFieldFormat = zerolog.DurationFormatString
	tty := isTerminal(w)
	w = cfg.Redactor().Writer(w)
	if cfg.LogFormat == "console" {
		// Colour only for a person at a terminal (and not with NO_COLOR):
		// escape codes in a file or a log collector are noise.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !tty || os.Getenv("NO_COLOR") != ""}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("service", cfg.Service).Logger(), nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func serve(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	if cfg.Dev {
		stopDev, err := startDevRedis(cfg, logger)
		if err != nil {
			return err
		}
		defer stopDev()
	}
	rdb, err := config.NewRedisClient(cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	// Closed last: after every actor that uses it has returned.
	defer rdb.Close()

	component := func(name string) zerolog.Logger { return logger.With().Str("component", name).Logger() }
	// OpenTelemetry, from the standard OTEL_* variables; off when unset.
	stopTracing, err := tracing.Setup(ctx, cfg.Service, component("tracing"))
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	// Flushed after g.Run returns, so the last delivery spans are exported.
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(fctx); err != nil {
			logger.Warn().Err(err).Msg("tracing: flushing spans at shutdown")
		}
	}()
	var secret []byte
	if cfg.WebhookSecret != "" {
		if secret, err = config.DecodeWebhookSecret(cfg.WebhookSecret); err != nil {
			return fmt.Errorf("webhook_secret: %w", err)
		}
	}
	sp, err := spool.OpenSet(cfg.SpoolDir, spool.Options{MaxBytes: cfg.SpoolMaxBytes}, component("spool"))
	if err != nil {
		return err
	}
	defer sp.Close()
	ledger, err := inbox.OpenLedger(filepath.Join(cfg.SpoolDir, "inbox.ledger"), cfg.IdempotencyWindow)
	if err != nil {
		return err
	}
	defer ledger.Close()

	m := metrics.New()
	monitor := health.NewMonitor(rdb, time.Second, m, component("redis-monitor"))
	subs, targets := newSubscriptions(cfg, rdb, secret, m, component)
	in := inbox.New(ledger, targets, cfg.ShutdownGrace, component("inbox"))
	runners := map[string]health.Runner{}
	for _, s := range subs {
		c := s.Config()
		runners[c.Topic+"/"+c.Group] = s
		s.SetDedup(in.Deduper(c.Topic + "/" + c.Group))
	}
	trimmer := stream.NewTrimmer(rdb, stream.Retention{MaxLen: cfg.Retention.MaxLen, MaxAge: cfg.Retention.MaxAge},
		cfg.Retention.Interval, m, component("retention"))
	publisher := stream.NewPublisher(rdb, stream.PublisherOptions{
		IdempotencyTTL: cfg.IdempotencyWindow, MinReplicas: cfg.RedisMinReplicas, DrainID: sp.ID(),
		Touched: trimmer.Touch,
	}, component("publisher"))
	rel := relay.New(publisher, sp, cfg.PublishTimeout, relay.Options{
		Rejected: stream.IsRejected, Uncertain: stream.IsUncertain, Observer: m,
	}, component("relay"))
	// Publishes of a partitioned topic go to the partition their key picks.
	pub := stream.Partitioner{Next: rel, Partitions: cfg.Partitions}
	readiness := health.NewReadiness(monitor, rel, runners)
	statusSubs := make([]health.Subscription, len(subs))
	for i, s := range subs {
		statusSubs[i] = s
	}
	shownURLs := map[string]string{}
	for _, sc := range cfg.Subscriptions {
		for _, pt := range stream.PartitionTopics(sc.Topic, cfg.Partitions[sc.Topic]) {
			shownURLs[pt+"/"+sc.Group] = config.RedactURL(sc.URL)
		}
	}
	redactor := cfg.Redactor()
	status := health.NewStatus(rdb, health.Sources{
		Service: cfg.Service, Consumer: cfg.Consumer, RedisURL: config.RedactURL(cfg.RedisURL), Version: version,
		Monitor: monitor, Subscriptions: statusSubs, Gauges: m,
		Spool:     func() any { return rel.Stats() },
		Topics:    m.TopicCounts,
		Fallbacks: m.FallbackCounts,
		Retention: func() any { return trimmer.Stats() },
		OnRefresh: func() { st := sp.Stats(); m.SetSpool(st.Events, st.Bytes, st.MaxBytes) },
		URLs:      shownURLs,
		Redact:    redactor.Bytes,
	}, 5*time.Second, component("status"))
	var routes []httpbridge.Route
	for _, r := range cfg.Routes {
		rt := httpbridge.Route{Path: r.Path, Topic: r.Topic, Fallback: r.Fallback}
		if r.Response != nil {
			rt.Response = &httpbridge.RouteResponse{Status: r.Response.Status, Body: []byte(r.Response.Body), ContentType: r.Response.ContentType}
		}
		routes = append(routes, rt)
	}
	var inboxer httpbridge.Inbox
	if len(targets) > 0 {
		inboxer = in
	}
	// The event log's admin API: inspect, redrive, purge, seek, pause.
	adminAPI := admin.New(rdb, admin.Config{
		Topics: configuredTopics(cfg), Consumer: cfg.Consumer, Token: cfg.APIToken != "", Observer: m, Partitions: cfg.Partitions,
	}, component("admin"))
	api := httpbridge.NewAPI(httpbridge.APIConfig{
		Service: cfg.Service, Token: cfg.APIToken, MaxBody: cfg.MaxBody,
		Routes: routes, Fallbacks: cfg.Fallbacks, Secret: secret, FallbackClient: newHTTPClient(4), Observer: m,
		Extra:    map[string]http.Handler{"/v1/status": status.Handler(), "/metrics": m.Handler()},
		Upstream: cfg.UpstreamURL(),
		Admin:    adminAPI, Console: console.Handler(),
	}, pub, inboxer, readiness.Handler(), component("api"))

	// Bind before running, so a port conflict fails the start, not a goroutine.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := httpbridge.NewServer(api, component("http"))
	// Redis-protocol ingress (resp.listen): bound here too, so a port
	// conflict fails the start.
	var respSrv *resp.Server
	if cfg.RespListen != "" {
		var reserved []string // topics a webhook subscription reads in the service's group
		for _, sc := range cfg.Subscriptions {
			if sc.Group == cfg.Service {
				reserved = append(reserved, sc.Topic)
			}
		}
		feeds := resp.NewRedis(rdb, resp.RedisConfig{
			Group: cfg.Service, Consumer: cfg.Consumer, ClaimTimeout: cfg.ClaimTimeout,
			Grace: cfg.ShutdownGrace, Observer: m,
		}, component("resp"))
		if respSrv, err = resp.New(cfg.RespListen, resp.Config{
			Service: cfg.Service, Token: cfg.APIToken, MaxMessage: int(cfg.MaxBody),
			Grace: cfg.ShutdownGrace, Version: version, Reserved: reserved,
		}, pub, feeds, component("resp")); err != nil {
			return fmt.Errorf("resp.listen: %w", err)
		}
	}
	var debugLn net.Listener
	if cfg.DebugAddr != "" {
		if debugLn, err = net.Listen("tcp", cfg.DebugAddr); err != nil {
			return fmt.Errorf("debug_addr: %w", err)
		}
	}

	// Interrupts run in Add order. The signal handler comes first; the HTTP
	// server turns readiness off before it drains, so load balancers stop
	// sending and no publish or inbox request arrives after; then the inbox
	// and the subscribers finish in-flight deliveries within the grace
	// period; the spool drainer stops (what it did not drain stays on disk
	// for the next start); the Redis client and the spool close after
	// g.Run returns.
	var g actors.Group
	{
		// Signal handler: SIGINT/SIGTERM end the group with a SignalError.
		g.Add(actors.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	}
	{
		// HTTP API: publish, health.
		g.Add(func() error {
			logger.Info().Str("listen", ln.Addr().String()).Str("redis", config.RedactURL(cfg.RedisURL)).
				Int("subscriptions", len(subs)).Str("version", version).Msg("sidecar started")
			logConfigured(cfg, logger)
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		}, func(error) {
			readiness.SetDraining()
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				logger.Warn().Err(err).Msg("http shutdown: grace period ended with requests in flight")
			}
		})
	}
	if respSrv != nil {
		// Redis-protocol ingress: PUBLISH and SUBSCRIBE for unmodified Redis
		// clients. Right after the HTTP API: a PUBLISH under way still gets
		// its answer from the relay (the spool closes after g.Run returns).
		rctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return respSrv.Run(rctx) }, func(error) { cancel() })
	}
	if debugLn != nil {
		// Profiling listener (debug_addr): Go's pprof handlers, nothing else.
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dbg := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		g.Add(func() error {
			if err := dbg.Serve(debugLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("debug: %w", err)
			}
			return nil
		}, func(error) { _ = dbg.Close() })
	}
	{
		// Inbox: deliveries of events a peer sent directly while Redis was down.
		ictx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return in.Run(ictx) }, func(error) { cancel() })
	}
	for _, s := range subs {
		// One subscriber per subscription: read, deliver, retry, dead-letter.
		sctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return s.Run(sctx) }, func(error) { cancel() })
	}
	{
		// Publish batcher: concurrent XADDs share one pipelined round trip.
		bctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return publisher.Run(bctx) }, func(error) { cancel() })
	}
	{
		// Spool drainer: moves events spooled during an outage into Redis, in order.
		rctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return rel.Run(rctx) }, func(error) { cancel() })
	}
	{
		// Retention: trims the topics this sidecar publishes to, never past
		// an entry some consumer group has not acknowledged.
		tctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return trimmer.Run(tctx) }, func(error) { cancel() })
	}
	{
		// Redis health monitor: ping, INFO, state-change logs.
		mctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return monitor.Run(mctx) }, func(error) { cancel() })
	}
	{
		// Status collector: lag, pending and DLQ gauges, read on a ticker.
		sctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return status.Run(sctx) }, func(error) { cancel() })
	}

	err = g.Run()
	if errors.Is(err, actors.ErrSignal) || errors.Is(err, context.Canceled) {
		logger.Info().Str("reason", err.Error()).Msg("sidecar stopped")
		return nil // a signal (or the caller's cancel) is the normal way to stop: exit 0
	}
	return err
}

// logConfigured says once, at start, where events go: every URL through
// config.RedactURL.
func logConfigured(cfg *config.Config, logger zerolog.Logger) {
	for _, sc := range cfg.Subscriptions {
		logger.Info().Str("topic", sc.Topic).Str("group", sc.Group).Str("url", config.RedactURL(sc.URL)).Msg("subscription")
	}
	for _, r := range cfg.Routes {
		logger.Info().Str("path", r.Path).Str("topic", r.Topic).Str("fallback", config.RedactURL(r.Fallback)).Msg("route")
	}
	for topic, u := range cfg.Fallbacks {
		logger.Info().Str("topic", topic).Str("fallback", config.RedactURL(u)).Msg("publish fallback")
	}
	if cfg.Upstream != "" {
		logger.Info().Str("upstream", config.RedactURL(cfg.Upstream)).Msg("unrouted requests are proxied upstream")
	}
}

// newSubscriptions builds, per configured subscription, its subscriber and
// the inbox target that delivers fallback events to the same webhook.
func newSubscriptions(cfg *config.Config, rdb redis.UniversalClient, secret []byte, obs stream.Observer, component func(string) zerolog.Logger) ([]*stream.Subscriber, []inbox.Target) {
	var (
		subs    []*stream.Subscriber
		targets []inbox.Target
	)
	for _, sc := range cfg.Subscriptions {
		// Body applies to stream and inbox deliveries alike: both go through wh.
		wh := &httpbridge.Webhook{URL: sc.URL, Timeout: sc.Timeout, Secret: secret, Body: httpbridge.Pointer(sc.Body),
			Client: redriveDoer{newHTTPClient(sc.Concurrency)}, Group: sc.Group}
		handler := webhookHandler{wh}
		policy := backoff.Policy{Initial: sc.Backoff.Initial, Max: sc.Backoff.Max}
		// A partitioned topic is read partition by partition, each its own
		// stream and consumer group (of the same name).
		for _, pt := range stream.PartitionTopics(sc.Topic, cfg.Partitions[sc.Topic]) {
			log := component("subscriber").With().Str("topic", pt).Str("group", sc.Group).Logger()
			subs = append(subs, stream.NewSubscriber(rdb, stream.SubscriptionConfig{
				Topic: pt, Group: sc.Group, Consumer: cfg.Consumer,
				StartLatest: sc.Start == config.StartLatest, Concurrency: sc.Concurrency,
				ByKey: sc.Ordering == config.OrderingKey, BatchMax: sc.Batch.MaxEvents, BatchWait: sc.Batch.MaxWait,
				RetryFor: sc.RetryFor, MaxAttempts: sc.MaxAttempts, Backoff: policy,
				ClaimTimeout: cfg.ClaimTimeout, Grace: cfg.ShutdownGrace, DLQMaxLen: cfg.Retention.MaxLen, Observer: obs,
			}, handler, log))
		}
		targets = append(targets, inbox.Target{
			Key: sc.Topic + "/" + sc.Group, Topic: sc.Topic, Concurrency: sc.Concurrency,
			RetryFor: sc.RetryFor, MaxAttempts: sc.MaxAttempts, Backoff: policy,
			Deliver: func(ctx context.Context, attempt int, ev *event.Event) error {
				if sc.Batch.MaxEvents > 0 {
					// The webhook takes batches only: a batch of one.
					return wh.DeliverBatch(ctx, sc.Topic, attempt, []*event.Event{ev})
				}
				return wh.Deliver(ctx, sc.Topic, attempt, ev)
			},
		})
	}
	return subs, targets
}

// webhookHandler delivers a subscription's events to its webhook, one by
// one or (batched delivery) as CloudEvents batches.
type webhookHandler struct{ wh *httpbridge.Webhook }

func (h webhookHandler) Handle(ctx context.Context, d stream.Delivery) error {
	return h.wh.Deliver(withRedrive(ctx, d.Redrive), d.Topic, d.Attempt, d.Event)
}

func (h webhookHandler) HandleBatch(ctx context.Context, b stream.Batch) error {
	return h.wh.DeliverBatch(withRedrive(ctx, b.Redrive), b.Topic, b.Attempt, b.Events)
}

// configuredTopics are the topics the configuration names: subscribed,
// routed, or with a publish fallback.
func configuredTopics(cfg *config.Config) []string {
	var topics []string
	for _, sc := range cfg.Subscriptions {
		topics = append(topics, sc.Topic)
	}
	for _, r := range cfg.Routes {
		topics = append(topics, r.Topic)
	}
	for t := range cfg.Fallbacks {
		topics = append(topics, t)
	}
	return topics
}

// newHTTPClient is a keep-alive client for webhook and fallback POSTs.
func newHTTPClient(conns int) *http.Client {
	return httpbridge.NewClient(conns)
}

// startDevRedis starts dev mode's in-memory server when nothing answers at
// the configured address.
func startDevRedis(cfg *config.Config, logger zerolog.Logger) (func(), error) {
	o, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("--dev needs a plain redis:// URL, not %s: %s", config.RedactURL(cfg.RedisURL), cfg.Redactor().String(err.Error()))
	}
	m, err := devredis.StartIfAbsent(o.Addr)
	if err != nil {
		return nil, err
	}
	if m == nil {
		logger.Info().Str("addr", o.Addr).Msg("dev mode: a Redis already answers there; using it")
		return func() {}, nil
	}
	logger.Warn().Str("addr", o.Addr).
		Msg("DEV MODE: started an embedded in-memory Redis; events are NOT durable and vanish on exit — never use --dev in production")
	return m.Close, nil
}

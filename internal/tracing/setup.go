// Package tracing provides the sidecar's OpenTelemetry tracing: setup from
// the standard OTEL_* environment, and the spans of a publish and of each
// webhook delivery attempt, joined to the publisher's trace by W3C trace
// context (traceparent, tracestate).
//
//	publisher ──traceparent──▶ publish span ──HopContext──▶ stored with the event
//	                                                              │
//	webhook ◀──traceparent (Inject)── delivery span (per attempt) ◀┘ parent + link
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// scope names the instrumentation in every exported span.
const scope = "github.com/fogis-sidecar/sidecar/internal/tracing"

// active is the tracer spans start from; nil while tracing is off. It is
// the package's only state, and deliberately so: the spans start deep in
// the HTTP bridge, and one atomic load returning nil is what makes tracing
// free when off (OTel's global provider takes a mutex per Tracer call).
var active atomic.Pointer[tracer]

// errLog receives the SDK's asynchronous errors (a collector that does not
// answer) while a Setup is live; nil otherwise.
var errLog atomic.Pointer[zerolog.Logger]

type tracer struct{ t trace.Tracer }

// Setup turns tracing on when the standard OTEL_* environment asks for it,
// and says in one log line whether it did and where spans go.
//
// Tracing is on when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
// OTEL_EXPORTER_OTLP_ENDPOINT is set, unless OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none. Spans go over OTLP/HTTP (http/protobuf, or
// http/json); the exporter reads the endpoint, headers, timeout,
// compression and TLS variables itself, the SDK reads OTEL_TRACES_SAMPLER
// and OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on) and OTEL_BSP_*.
// The resource's service.name is service unless OTEL_SERVICE_NAME or
// OTEL_RESOURCE_ATTRIBUTES say otherwise.
//
// Off, nothing is installed and no goroutine runs: every helper of this
// package is a no-op. Setup installs no global propagator either way.
//
// An error means the environment asks for tracing the sidecar cannot do (a
// malformed endpoint, OTLP over gRPC, only unsupported exporters): refuse
// to start, naming it. Settings the SDK can fall back from (a bad sampler
// or resource attribute) are logged as warnings instead.
//
// shutdown flushes the spans still buffered and turns tracing off; give it
// a deadline.
func Setup(ctx context.Context, service string, logger zerolog.Logger) (shutdown func(context.Context) error, err error) {
	nop := func(context.Context) error { return nil }
	s, err := settingsFromEnv(os.Getenv)
	if err != nil {
		return nop, err
	}
	if s.off != "" {
		logger.Info().Str("reason", s.off).Msg("tracing off")
		return nop, nil
	}
	for _, w := range s.warnings {
		logger.Warn().Msg(w)
	}

	// The SDK reports what goes wrong later (a collector that does not
	// answer) to OTel's error handler; route it here, at most a few lines
	// a minute however long the collector stays away.
	sampled := logger.Sample(&zerolog.BurstSampler{Burst: 3, Period: time.Minute})
	errLog.Store(&sampled)
	otel.SetErrorHandler(errorHandler{})

	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME, override the above
		resource.WithTelemetrySDK(),
	)
	if err != nil {
		if !errors.Is(err, resource.ErrPartialResource) || res == nil {
			errLog.Store(nil)
			return nop, fmt.Errorf("tracing resource: %w", err)
		}
		logger.Warn().Err(err).Msg("OTEL_RESOURCE_ATTRIBUTES: ignoring the malformed entries")
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		errLog.Store(nil)
		return nop, fmt.Errorf("otlp trace exporter: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	mine := &tracer{t: tp.Tracer(scope)}
	active.Store(mine)

	svc, _ := res.Set().Value(semconv.ServiceNameKey)
	logger.Info().Str("endpoint", s.endpoint).Str("protocol", s.protocol).
		Str("sampler", s.sampler).Str("service_name", svc.Emit()).Msg("tracing on")

	return func(ctx context.Context) error {
		// Stop starting spans first, then flush the ones already ended.
		active.CompareAndSwap(mine, nil)
		err := tp.Shutdown(ctx)
		errLog.CompareAndSwap(&sampled, nil)
		if err != nil {
			return fmt.Errorf("tracing shutdown: %w", err)
		}
		return nil
	}, nil
}

// errorHandler is OTel's error handler while tracing is on: a Setup's
// logger, or, after its shutdown, the standard logger like OTel's default.
type errorHandler struct{}

func (errorHandler) Handle(err error) {
	if l := errLog.Load(); l != nil {
		l.Warn().Err(err).Msg("tracing error")
		return
	}
	log.Print(err)
}

// settings is what the environment asks of Setup.
type settings struct {
	off      string // why tracing is off; "" = on
	endpoint string // where spans go, credentials redacted
	protocol string
	sampler  string
	warnings []string
}

// settingsFromEnv reads the OTEL_* variables the way the exporter and the
// SDK will, to decide on or off, refuse what cannot work, and describe it.
// An empty variable counts as unset, as the OTel specification says.
func settingsFromEnv(getenv func(string) string) (settings, error) {
	env := func(k string) string { return strings.TrimSpace(getenv(k)) }
	var s settings
	if strings.EqualFold(env("OTEL_SDK_DISABLED"), "true") {
		s.off = "OTEL_SDK_DISABLED=true"
		return s, nil
	}
	if exporters := env("OTEL_TRACES_EXPORTER"); exporters != "" {
		var otlp bool
		var other []string
		for _, e := range strings.Split(exporters, ",") {
			switch e = strings.ToLower(strings.TrimSpace(e)); e {
			case "otlp":
				otlp = true
			case "none", "":
			default:
				other = append(other, e)
			}
		}
		switch {
		case !otlp && len(other) == 0:
			s.off = "OTEL_TRACES_EXPORTER=none"
			return s, nil
		case !otlp:
			return s, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: the sidecar exports traces only over OTLP (otlp)", exporters)
		case len(other) > 0:
			s.warnings = append(s.warnings, fmt.Sprintf("OTEL_TRACES_EXPORTER: ignoring %s; the sidecar exports traces only over OTLP", strings.Join(other, ", ")))
		}
	}

	name, raw := "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if raw == "" {
		name, raw = "OTEL_EXPORTER_OTLP_ENDPOINT", env("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if raw == "" {
		s.off = "neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set"
		return s, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		// Not the value: a URL that does not parse may still hold a secret.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return s, fmt.Errorf("%s is not a URL: %v", name, err)
	}
	if scheme := strings.ToLower(u.Scheme); (scheme != "http" && scheme != "https") || u.Host == "" {
		return s, fmt.Errorf("%s=%s: want an http:// or https:// URL with a host, e.g. http://otel-collector:4318", name, redact(u))
	}
	// As the exporter does: the per-signal URL is used as it is, the
	// general one is a base for /v1/traces.
	if name == "OTEL_EXPORTER_OTLP_ENDPOINT" {
		u.Path = path.Join(u.Path, "/v1/traces")
	} else if u.Path == "" {
		u.Path = "/"
	}
	u.RawPath = ""
	s.endpoint = redact(u)

	s.protocol = "http/protobuf"
	for _, k := range []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		switch p := env(k); p {
		case "":
		case "http/protobuf", "http/json":
			s.protocol = p
		case "grpc":
			return s, fmt.Errorf("%s=grpc: the sidecar exports OTLP over HTTP only; set http/protobuf (or http/json) and the collector's HTTP endpoint (port 4318)", k)
		default:
			s.warnings = append(s.warnings, fmt.Sprintf("%s=%s is not a protocol; using http/protobuf", k, p))
			s.protocol = "http/protobuf"
		}
	}

	s.sampler = describeSampler(env("OTEL_TRACES_SAMPLER"), env("OTEL_TRACES_SAMPLER_ARG"))
	return s, nil
}

// describeSampler says which sampler the SDK makes of OTEL_TRACES_SAMPLER
// and its argument; it falls back (and reports why through the error
// handler) on a value it does not know.
func describeSampler(name, arg string) string {
	const def = "parentbased_always_on"
	switch name = strings.ToLower(name); name {
	case "":
		return def
	case "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return name
	case "traceidratio", "parentbased_traceidratio":
		if arg == "" {
			return name + " 1"
		}
		if r, err := strconv.ParseFloat(arg, 64); err != nil || r < 0 || r > 1 {
			return name + " 1"
		}
		return name + " " + arg
	default:
		return def
	}
}

// redact hides what may be a credential in an endpoint URL: the userinfo
// and every query value.
func redact(u *url.URL) string {
	r := *u
	if r.User != nil {
		r.User = url.User("REDACTED")
	}
	if r.RawQuery != "" {
		q := r.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		r.RawQuery = q.Encode()
	}
	return r.String()
}

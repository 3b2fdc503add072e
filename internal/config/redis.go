package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ParseRedisURL turns a redis URL into universal client options:
//
//	redis://[user:pass@]host:port/db, rediss://… (TLS), unix:///path   standalone
//	redis://host:26379?master_name=mymaster[&addr=host2:26379]          Sentinel
//	redis+cluster://host:7000[?addr=host2:7000]  (rediss+cluster: TLS)  Cluster
func ParseRedisURL(raw string) (*redis.UniversalOptions, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", RedactURL(raw), err)
	}
	var uo *redis.UniversalOptions
	switch {
	case u.Scheme == "redis+cluster" || u.Scheme == "rediss+cluster":
		u.Scheme = strings.TrimSuffix(u.Scheme, "+cluster")
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("cluster URL %q: %v", RedactURL(raw), err)
		}
		uo = &redis.UniversalOptions{
			Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
			IsClusterMode: true,
		}
	case u.Query().Has("master_name"):
		o, err := redis.ParseFailoverURL(raw)
		if err != nil {
			return nil, fmt.Errorf("sentinel URL %q: %v", RedactURL(raw), err)
		}
		uo = &redis.UniversalOptions{
			Addrs: o.SentinelAddrs, MasterName: o.MasterName, DB: o.DB,
			Username: o.Username, Password: o.Password,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword,
			TLSConfig: o.TLSConfig,
		}
	default:
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", RedactURL(raw), err)
		}
		uo = &redis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, Protocol: o.Protocol,
		}
		if o.Network == "unix" {
			return nil, fmt.Errorf("%q: unix sockets are not supported by the universal client; use redis://host:port", RedactURL(raw))
		}
	}
	// Publishing must never hang on a stalled Redis: every command honours its
	// context deadline, and connection attempts fail fast.
	uo.ContextTimeoutEnabled = true
	uo.DialTimeout = 2 * time.Second
	// go-redis retries a refused dial 5 times, 100 ms apart, by default: half
	// a second in which a publish could have been spooled. The sidecar has
	// its own retry loops, so fail fast here.
	uo.DialerRetries = 1
	uo.DialerRetryTimeout = 10 * time.Millisecond
	uo.ReadTimeout = 5 * time.Second
	uo.WriteTimeout = 5 * time.Second
	// No transparent retries. A write (XADD, a script) whose answer was
	// lost when a master died may have been applied and replicated: re-sent
	// on a new connection it lands twice; the relay spools it as uncertain
	// and drains it idempotently instead. A consumer-group read whose
	// answer was lost has handed entries to this consumer: a silent retry
	// hides that and they come back late, out of order; the subscriber sees
	// the error and re-reads its own pending entries first.
	uo.MaxRetries = -1
	uo.DisableIdentity = true
	return uo, nil
}

// NewRedisClient builds a client for the URL; it does not connect until first use.
func NewRedisClient(raw string) (redis.UniversalClient, error) {
	o, err := ParseRedisURL(raw)
	if err != nil {
		return nil, err
	}
	return redis.NewUniversalClient(o), nil
}

// RedactURL hides a password in a URL for error messages and logs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

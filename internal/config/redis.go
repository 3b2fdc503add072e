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
//	redis://[user:pass@]host:port/db, rediss://… (TLS)                  standalone
//	redis://[user:pass@]host:26379?master_name=mymaster[&addr=host2:26379] Sentinel
//	redis+cluster://[user:pass@]host:7000[?addr=host2:7000] (rediss+cluster: TLS)  Cluster
//
// Credentials: user:pass@ (or ?username=&password=) authenticate to the
// data nodes — standalone, every Cluster node, a Sentinel set's master
// and replicas. A Sentinel URL's sentinels take ?sentinel_username= and
// ?sentinel_password=; without them they get the URL's user:pass@ too
// (requirepass on every node). go-redis's own Sentinel form,
// user:pass@ for the sentinels plus ?password= for the data nodes, still
// means what it meant. Errors never carry a password.
func ParseRedisURL(raw string) (*redis.UniversalOptions, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s is not a URL: %s", RedactURL(raw), urlParseReason(err))
	}
	// go-redis quotes pieces of the URL in its errors (a database number,
	// an addr, an option's value): strip every credential from them.
	red := NewRedactor(urlSecrets(raw)...)
	shown := RedactURL(raw)
	q := u.Query()
	hasParam := func(names ...string) bool {
		for _, n := range names {
			if q.Has(n) {
				return true
			}
		}
		return false
	}
	dataParams := hasParam("username", "password")
	sentinelParams := hasParam("sentinel_username", "sentinel_password")
	sentinel := q.Has("master_name")
	if sentinelParams && !sentinel {
		return nil, fmt.Errorf("%s: sentinel_username and sentinel_password apply only to a Sentinel URL (?master_name=…)", shown)
	}
	var uo *redis.UniversalOptions
	switch {
	case u.Scheme == "redis+cluster" || u.Scheme == "rediss+cluster":
		u.Scheme = strings.TrimSuffix(u.Scheme, "+cluster")
		if err := credentialsToUserinfo(u, q, shown); err != nil {
			return nil, err
		}
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("cluster URL %s: %w", shown, redactedError(red, err))
		}
		uo = &redis.UniversalOptions{
			Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
			IsClusterMode: true,
		}
	case sentinel:
		o, err := parseSentinelURL(u, q, dataParams, sentinelParams, shown)
		if err != nil {
			return nil, redactedError(red, err)
		}
		uo = &redis.UniversalOptions{
			Addrs: o.SentinelAddrs, MasterName: o.MasterName, DB: o.DB,
			Username: o.Username, Password: o.Password,
			SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword,
			TLSConfig: o.TLSConfig,
		}
	default:
		if err := credentialsToUserinfo(u, q, shown); err != nil {
			return nil, err
		}
		o, err := redis.ParseURL(u.String())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", shown, redactedError(red, err))
		}
		uo = &redis.UniversalOptions{
			Addrs: []string{o.Addr}, DB: o.DB, Username: o.Username, Password: o.Password,
			TLSConfig: o.TLSConfig, Protocol: o.Protocol,
		}
		if o.Network == "unix" {
			return nil, fmt.Errorf("%s: unix sockets are not supported by the universal client; use redis://host:port", shown)
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

// credentialsToUserinfo moves ?username= and ?password= of a standalone
// or Cluster URL into its userinfo, the one place go-redis reads them
// from there.
func credentialsToUserinfo(u *url.URL, q url.Values, shown string) error {
	if !q.Has("username") && !q.Has("password") {
		return nil
	}
	if u.User != nil {
		return fmt.Errorf("%s: credentials given twice, in user:password@ and in ?username=/?password=; keep one", shown)
	}
	u.User = url.UserPassword(q.Get("username"), q.Get("password"))
	q.Del("username")
	q.Del("password")
	u.RawQuery = q.Encode()
	return nil
}

// parseSentinelURL reads a Sentinel URL with go-redis, then assigns the
// credentials as ParseRedisURL documents. go-redis alone gives user:pass@
// to the sentinels only: with requirepass on every node the master then
// refuses the sidecar (NOAUTH) and it never becomes ready.
func parseSentinelURL(u *url.URL, q url.Values, dataParams, sentinelParams bool, shown string) (*redis.FailoverOptions, error) {
	var infoUser, infoPass string
	if u.User != nil {
		infoUser = u.User.Username()
		infoPass, _ = u.User.Password()
	}
	if u.User != nil && dataParams && sentinelParams {
		return nil, fmt.Errorf("sentinel URL %s: user:password@ would be unused: ?password= is the master's and replicas' password, "+
			"?sentinel_password= the sentinels'; drop one of the three", shown)
	}
	sentUser, sentPass := q.Get("sentinel_username"), q.Get("sentinel_password")
	q.Del("sentinel_username")
	q.Del("sentinel_password")
	stripped := *u
	stripped.RawQuery = q.Encode()
	o, err := redis.ParseFailoverURL(stripped.String())
	if err != nil {
		return nil, fmt.Errorf("sentinel URL %s: %w", shown, err)
	}
	// Here go-redis has put user:pass@ in Sentinel* and ?username=&password=
	// in Username/Password.
	if !dataParams {
		o.Username, o.Password = infoUser, infoPass
	}
	if sentinelParams {
		o.SentinelUsername, o.SentinelPassword = sentUser, sentPass
	} else {
		o.SentinelUsername, o.SentinelPassword = infoUser, infoPass
	}
	return o, nil
}

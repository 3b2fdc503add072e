package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// sentinelAnswer is one sentinel's reply to get-master-addr-by-name.
type sentinelAnswer struct {
	addr, master string
	err          error
}

// askSentinels asks every sentinel at once, so one that does not answer
// costs a timeout, not one per sentinel.
func askSentinels(ctx context.Context, s Sentinels) []sentinelAnswer {
	answers := make([]sentinelAnswer, len(s.Addrs))
	var wg sync.WaitGroup
	for i, addr := range s.Addrs {
		wg.Go(func() {
			sc := redis.NewSentinelClient(&redis.Options{
				Addr: addr, Username: s.Username, Password: s.Password, TLSConfig: s.TLSConfig,
				DialTimeout: time.Second, MaxRetries: -1, DisableIdentity: true,
			})
			defer sc.Close()
			ctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			answers[i].addr = addr
			hp, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
			switch {
			case errors.Is(err, redis.Nil):
				answers[i].err = fmt.Errorf("does not monitor %q", s.MasterName)
			case err != nil:
				answers[i].err = err
			case len(hp) != 2:
				answers[i].err = fmt.Errorf("unexpected reply %v", hp)
			default:
				answers[i].master = net.JoinHostPort(hp[0], hp[1])
			}
		})
	}
	wg.Wait()
	return answers
}

// checkSentinels asks each sentinel of the URL where the master is. A
// failover needs a quorum of sentinels, and the sidecar follows whichever
// one it reaches first: at least two must answer, and agree.
func checkSentinels(ctx context.Context, s Sentinels, add addFunc) {
	answers := askSentinels(ctx, s)
	byMaster := map[string][]string{}
	var failed []string
	for _, a := range answers {
		if a.err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", a.addr, a.err))
			continue
		}
		byMaster[a.master] = append(byMaster[a.master], a.addr)
	}
	answered := len(answers) - len(failed)
	silent := ""
	if len(failed) > 0 {
		silent = " (" + strings.Join(failed, "; ") + ")"
	}
	if authFailed(failed) {
		silent += " — the sentinels take ?sentinel_password= (and ?sentinel_username=), else the URL's user:password@; ?password= is the master's and replicas' only"
	}
	switch {
	case answered == 0:
		add("Sentinel", false, true, "none of %d sentinels tells where master %q is%s", len(answers), s.MasterName, silent)
	case len(byMaster) > 1:
		var views []string
		for m, from := range byMaster {
			views = append(views, fmt.Sprintf("%s says %s", strings.Join(from, ", "), m))
		}
		sort.Strings(views)
		add("Sentinel", false, false, "sentinels disagree on master %q: %s — a failover is under way, or they do not watch the same Redis%s", s.MasterName, strings.Join(views, "; "), silent)
	case answered < 2:
		add("Sentinel", false, false, "%d of %d sentinels answers: master %q is %s; if it is down when the sidecar starts, the sidecar cannot find the master — list two or more reachable sentinels in REDIS_URL (&addr=)%s", answered, len(answers), s.MasterName, onlyKey(byMaster), silent)
	default:
		add("Sentinel", true, false, "%d of %d sentinels answer and agree: master %q is %s%s", answered, len(answers), s.MasterName, onlyKey(byMaster), silent)
	}
}

func onlyKey(m map[string][]string) string {
	for k := range m {
		return k
	}
	return ""
}

// authFailed reports whether a sentinel refused the credentials (or got
// some it does not want).
func authFailed(failed []string) bool {
	for _, f := range failed {
		for _, w := range []string{"NOAUTH", "WRONGPASS", "invalid password", "without any password configured", "invalid username-password"} {
			if strings.Contains(f, w) {
				return true
			}
		}
	}
	return false
}

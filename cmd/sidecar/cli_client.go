package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// adminClient calls one sidecar's admin API.
type adminClient struct {
	base  string // scheme://host[:port], no trailing slash
	token string
	http  *http.Client
}

// newAdminClient resolves the address (flag, SIDECAR_ADDR, SIDECAR_LISTEN,
// default) and the token (SIDECAR_API_TOKEN).
func newAdminClient(flagAddr string, getenv func(string) string) (*adminClient, error) {
	addr := flagAddr
	if addr == "" {
		addr = getenv("SIDECAR_ADDR")
	}
	if addr == "" {
		if l := getenv("SIDECAR_LISTEN"); l != "" {
			// Inside the sidecar's container: its own listen address, with a
			// wildcard host reached over loopback.
			host, port, err := net.SplitHostPort(l)
			if err == nil {
				if host == "" || host == "0.0.0.0" || host == "::" {
					host = "127.0.0.1"
				}
				addr = net.JoinHostPort(host, port)
			}
		}
	}
	if addr == "" {
		addr = defaultAdminAddr
	}
	base, err := normalizeAddr(addr)
	if err != nil {
		return nil, err
	}
	return &adminClient{base: base, token: getenv("SIDECAR_API_TOKEN"), http: &http.Client{Timeout: time.Minute}}, nil
}

// normalizeAddr turns host:port, :port or a URL into a base URL.
func normalizeAddr(addr string) (string, error) {
	addr = strings.TrimSpace(addr)
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--addr %q: want host:port or an http(s):// URL", addr)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

// apiError is the admin API's {"error","code"} answer.
type apiError struct {
	Status  int
	Message string
	Code    string
	hint    string
}

func (e *apiError) Error() string {
	msg := e.Message
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	return msg + e.hint
}

// call sends one request and returns the 2xx answer's body. A non-2xx
// answer becomes an *apiError; a failed connection says which address it
// tried.
func (a *adminClient) call(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	u := a.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "sidecar-cli/"+version)
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the sidecar at %s: %w (is it running there? --addr or SIDECAR_ADDR says where)", a.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, a.base+path, err)
	}
	if resp.StatusCode/100 == 2 {
		return b, nil
	}
	e := &apiError{Status: resp.StatusCode}
	if json.Unmarshal(b, e.fields()) != nil || e.Message == "" {
		// Not the admin API's error shape: an older sidecar, a proxy.
		text := strings.TrimSpace(string(b))
		if len(text) > 200 {
			text = text[:200] + "…"
		}
		e.Message = fmt.Sprintf("%s %s answered %d %s", method, a.base+path, resp.StatusCode, text)
		if resp.StatusCode == http.StatusNotFound {
			e.hint = " — is this a sidecar with the admin API?"
		}
	}
	if resp.StatusCode == http.StatusUnauthorized && a.token == "" {
		e.hint = " — set SIDECAR_API_TOKEN"
	}
	return nil, e
}

// fields is what the error answer decodes into.
func (e *apiError) fields() any {
	return &struct {
		Error *string `json:"error"`
		Code  *string `json:"code"`
	}{&e.Message, &e.Code}
}

// do is call plus decoding the answer into into; it returns the raw
// answer too, for --json.
func (a *adminClient) do(ctx context.Context, method, path string, query url.Values, body, into any) ([]byte, error) {
	b, err := a.call(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, into); err != nil {
		return nil, fmt.Errorf("%s %s: the sidecar at %s answered something unexpected: %w", method, path, a.base, err)
	}
	return b, nil
}

// topicPath is /v1/topics/{topic} plus more.
func topicPath(topic string, more ...string) string {
	p := "/v1/topics/" + url.PathEscape(topic)
	for _, m := range more {
		p += "/" + m
	}
	return p
}

// subPath is /v1/subscriptions/{topic}/{group}/{op}.
func subPath(topic, group, op string) string {
	return "/v1/subscriptions/" + url.PathEscape(topic) + "/" + url.PathEscape(group) + "/" + op
}

// flexInt decodes a number given as a JSON number or a string (Redis keeps
// stream fields as strings).
type flexInt int64

func (n *flexInt) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*n = 0
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %s", b)
	}
	*n = flexInt(v)
	return nil
}

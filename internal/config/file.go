package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// fileConfig is the YAML file's shape (DESIGN.md). Pointers tell "absent" from zero.
type fileConfig struct {
	Service           *string `yaml:"service"`
	Listen            *string `yaml:"listen"`
	Consumer          *string `yaml:"consumer"`
	APIToken          *string `yaml:"api_token"`
	WebhookSecret     *string `yaml:"webhook_secret"`
	MaxBody           *string `yaml:"max_body"`
	PublishTimeout    *string `yaml:"publish_timeout"`
	ShutdownGrace     *string `yaml:"shutdown_grace"`
	ClaimTimeout      *string `yaml:"claim_timeout"`
	IdempotencyWindow *string `yaml:"idempotency_window"`
	Dev               *string `yaml:"dev"`
	DebugAddr         *string `yaml:"debug_addr"`
	Upstream          *string `yaml:"upstream"`
	Redis             struct {
		URL         *string `yaml:"url"`
		MinReplicas *string `yaml:"min_replicas"`
	} `yaml:"redis"`
	Resp struct {
		Listen *string `yaml:"listen"`
	} `yaml:"resp"`
	Spool struct {
		Dir      *string `yaml:"dir"`
		MaxBytes *string `yaml:"max_bytes"`
	} `yaml:"spool"`
	Log struct {
		Level  *string `yaml:"level"`
		Format *string `yaml:"format"`
	} `yaml:"log"`
	Retention struct {
		MaxLen   *string `yaml:"max_len"`
		MaxAge   *string `yaml:"max_age"`
		Interval *string `yaml:"interval"`
	} `yaml:"retention"`
	Subscriptions []fileSubscription `yaml:"subscriptions"`
	Routes        []struct {
		Path     string `yaml:"path"`
		Topic    string `yaml:"topic"`
		Fallback string `yaml:"fallback"`
		Response *struct {
			Status      *int    `yaml:"status"`
			Body        string  `yaml:"body"`
			ContentType *string `yaml:"content_type"`
		} `yaml:"response"`
	} `yaml:"routes"`
	Fallbacks map[string]string `yaml:"fallbacks"`
	Topics    map[string]struct {
		Partitions *int `yaml:"partitions"`
	} `yaml:"topics"`
}

type fileSubscription struct {
	Topic       string  `yaml:"topic"`
	URL         string  `yaml:"url"`
	Group       string  `yaml:"group"`
	Start       string  `yaml:"start"`
	Concurrency *int    `yaml:"concurrency"`
	Timeout     *string `yaml:"timeout"`
	RetryFor    *string `yaml:"retry_for"`
	MaxAttempts *int    `yaml:"max_attempts"`
	Body        string  `yaml:"body"`
	Ordering    string  `yaml:"ordering"`
	Batch       *struct {
		MaxEvents *int    `yaml:"max_events"`
		MaxWait   *string `yaml:"max_wait"`
	} `yaml:"batch"`
	Backoff struct {
		Initial *string `yaml:"initial"`
		Max     *string `yaml:"max"`
	} `yaml:"backoff"`
}

// applyFile reads the YAML file at path onto c, recording which settings it set.
func applyFile(c *Config, path string, explicit map[string]bool) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	scalars := map[string]*string{
		"service": fc.Service, "listen": fc.Listen, "consumer": fc.Consumer,
		"api_token": fc.APIToken, "webhook_secret": fc.WebhookSecret, "max_body": fc.MaxBody,
		"publish_timeout": fc.PublishTimeout, "shutdown_grace": fc.ShutdownGrace,
		"claim_timeout": fc.ClaimTimeout, "idempotency_window": fc.IdempotencyWindow, "dev": fc.Dev, "debug_addr": fc.DebugAddr, "upstream": fc.Upstream,
		"redis.url": fc.Redis.URL, "resp.listen": fc.Resp.Listen, "redis.min_replicas": fc.Redis.MinReplicas, "spool.dir": fc.Spool.Dir, "spool.max_bytes": fc.Spool.MaxBytes,
		"log.level": fc.Log.Level, "log.format": fc.Log.Format,
		"retention.max_len": fc.Retention.MaxLen, "retention.max_age": fc.Retention.MaxAge,
		"retention.interval": fc.Retention.Interval,
	}
	for _, s := range settings {
		v := scalars[s.yaml]
		if v == nil {
			continue
		}
		if err := s.apply(c, *v); err != nil {
			return fmt.Errorf("%s (config file %s): %w", s.yaml, path, err)
		}
		explicit[s.yaml] = true
	}
	for _, r := range fc.Routes {
		rt := Route{Path: r.Path, Topic: r.Topic, Fallback: r.Fallback}
		if fr := r.Response; fr != nil {
			rt.Response = &RouteResponse{Status: http.StatusOK, Body: fr.Body}
			if fr.Status != nil {
				rt.Response.Status = *fr.Status
			}
			switch {
			case fr.ContentType != nil:
				rt.Response.ContentType = *fr.ContentType
			case fr.Body == "":
			case json.Valid([]byte(fr.Body)):
				rt.Response.ContentType = "application/json"
			default:
				rt.Response.ContentType = "text/plain; charset=utf-8"
			}
		}
		c.Routes = append(c.Routes, rt)
	}
	if len(fc.Fallbacks) > 0 {
		c.Fallbacks = fc.Fallbacks
	}
	for topic, t := range fc.Topics {
		if t.Partitions == nil {
			continue
		}
		if c.Partitions == nil {
			c.Partitions = map[string]int{}
		}
		c.Partitions[topic] = *t.Partitions
	}
	for i, fs := range fc.Subscriptions {
		sub, err := fs.toSubscription()
		if err != nil {
			field, msg, _ := strings.Cut(err.Error(), ": ")
			return fmt.Errorf("subscriptions[%d].%s (config file %s): %s", i, field, path, msg)
		}
		c.Subscriptions = append(c.Subscriptions, sub)
	}
	return nil
}

func (fs fileSubscription) toSubscription() (Subscription, error) {
	s := DefaultSubscription(fs.Topic, fs.URL)
	s.Group = fs.Group
	s.Body = fs.Body
	if fs.Start != "" {
		s.Start = fs.Start
	}
	if fs.Ordering != "" {
		s.Ordering = fs.Ordering
	}
	if b := fs.Batch; b != nil {
		s.Batch.MaxEvents = 100
		if b.MaxEvents != nil {
			s.Batch.MaxEvents = *b.MaxEvents
			if s.Batch.MaxEvents < 1 {
				return s, fmt.Errorf("batch.max_events: %d is not in 1..%d", s.Batch.MaxEvents, MaxBatchEvents)
			}
		}
		if b.MaxWait != nil {
			d, err := time.ParseDuration(*b.MaxWait)
			if err != nil {
				return s, fmt.Errorf("batch.max_wait: %q is not a duration", *b.MaxWait)
			}
			s.Batch.MaxWait = d
		}
	}
	if fs.Concurrency != nil {
		s.Concurrency = *fs.Concurrency
	}
	if fs.MaxAttempts != nil {
		s.MaxAttempts = *fs.MaxAttempts
	}
	for name, p := range map[string]struct {
		src *string
		dst *time.Duration
	}{
		"timeout":         {fs.Timeout, &s.Timeout},
		"retry_for":       {fs.RetryFor, &s.RetryFor},
		"backoff.initial": {fs.Backoff.Initial, &s.Backoff.Initial},
		"backoff.max":     {fs.Backoff.Max, &s.Backoff.Max},
	} {
		if p.src == nil {
			continue
		}
		d, err := time.ParseDuration(*p.src)
		if err != nil {
			return s, fmt.Errorf("%s: %q is not a duration", name, *p.src)
		}
		*p.dst = d
	}
	return s, nil
}

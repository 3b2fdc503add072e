package main

import (
	"context"
	"net/http"

	"github.com/fogis-sidecar/sidecar/internal/httpbridge"
)

// redriveKey marks the context of a redriven delivery.
type redriveKey struct{}

// withRedrive marks ctx as the delivery of a dead letter an operator sent
// back (stream.Delivery.Redrive).
func withRedrive(ctx context.Context, redrive bool) context.Context {
	if !redrive {
		return ctx
	}
	return context.WithValue(ctx, redriveKey{}, true)
}

// redriveDoer adds "Sidecar-Redrive: true" to a redriven delivery's
// request, so the receiver can tell an operator's redrive from a retry.
type redriveDoer struct{ httpbridge.Doer }

func (d redriveDoer) Do(req *http.Request) (*http.Response, error) {
	if req.Context().Value(redriveKey{}) != nil {
		req.Header.Set("Sidecar-Redrive", "true")
	}
	return d.Doer.Do(req)
}

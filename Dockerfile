# syntax=docker/dockerfile:1
# Multi-stage: a static binary on distroless, running as non-root.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sidecar ./cmd/sidecar

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidecar /sidecar
# Listen on all interfaces inside the container; the spool lives on a volume.
ENV SIDECAR_LISTEN=0.0.0.0:7700 \
    SIDECAR_SPOOL_DIR=/data/spool
VOLUME ["/data"]
EXPOSE 7700
USER nonroot:nonroot
# distroless has no curl: the binary probes its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/sidecar", "health"]
ENTRYPOINT ["/sidecar"]

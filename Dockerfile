# The sidecar image: a static binary on an empty base, running as the
# numeric user 65532 with its spool on the /data volume.
#
#   docker build -t sidecar .          # compiles in golang:1.26 (needs a registry)
#
# The runtime stage (the last one, what ships) is FROM scratch and takes
# everything it holds from the stage named by SIDECAR_BINARY, which lays
# out the same tree either way:
#   /out/sidecar                              the static binary
#   /out/etc/passwd, /out/etc/group           naming uid/gid 65532 "nonroot"
#   /out/etc/ssl/certs/ca-certificates.crt    for https webhooks and rediss://
#   /out/data/                                empty: becomes /data, owned by 65532
# SIDECAR_BINARY=build (the default) compiles it here. SIDECAR_BINARY=prebuilt
# takes that tree from the build context, so the same runtime stage builds
# with no registry at all (test/deploy_test.go TestContainerImage does this):
#   CGO_ENABLED=0 go build -o ctx/sidecar ./cmd/sidecar   # plus ctx/etc/…, ctx/data/
#   DOCKER_BUILDKIT=1 docker build -f Dockerfile --target runtime \
#     --build-arg SIDECAR_BINARY=prebuilt ctx/
# BuildKit builds only the stages the target needs; the classic builder runs
# every stage before the target, so offline it stops at FROM golang:1.26.
#
# No "# syntax=" line: BuildKit would pull the dockerfile frontend image.
ARG SIDECAR_BINARY=build

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sidecar ./cmd/sidecar
# Numeric IDs: Kubernetes runAsNonRoot can only verify a numeric image user.
RUN mkdir -p /out/etc/ssl/certs /out/data \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && echo 'nonroot:x:65532:65532:nonroot:/data:/sbin/nologin' > /out/etc/passwd \
 && echo 'nonroot:x:65532:' > /out/etc/group

# A binary built elsewhere: the build context is the /out tree above.
FROM scratch AS prebuilt
COPY . /out/

FROM ${SIDECAR_BINARY} AS binary

FROM scratch AS runtime
COPY --from=binary /out/etc/ /etc/
# /data exists in the image, owned by 65532: Docker copies it (ownership
# included) into an empty named volume mounted there, so the spool is
# writable. Without it the mount point would be root:root 0755.
COPY --from=binary --chown=65532:65532 /out/data/ /data/
COPY --from=binary /out/sidecar /sidecar
# Listening on all interfaces: set SIDECAR_API_TOKEN (or api_token) so the
# API is not open to everything that can reach the port.
ENV SIDECAR_LISTEN=0.0.0.0:7700 \
    SIDECAR_SPOOL_DIR=/data/spool
VOLUME ["/data"]
EXPOSE 7700
USER 65532:65532
# No shell or curl here: the binary probes its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/sidecar", "health"]
ENTRYPOINT ["/sidecar"]

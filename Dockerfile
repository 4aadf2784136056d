# syntax=docker/dockerfile:1
# ringlb container image: a Rust builder stage, then a small Debian runtime with one binary,
# run as a non-root user.
#
#   docker build -t ringlb:latest .
#   docker run --rm -p 8080:8080 -v "$PWD/ringlb.toml:/etc/ringlb/ringlb.toml:ro" \
#       --ulimit memlock=-1 \
#       --security-opt seccomp=tuning/kubernetes/seccomp/ringlb.json ringlb:latest
#
# tuning/kubernetes/deployment.yaml runs the same name and tag (validate.sh checks it).
#
# io_uring and seccomp: Docker's default seccomp profile blocks io_uring_setup/enter/register
# since Docker 25.0 (and containerd's default profile does too), so ringlb's io_uring engine
# cannot start under it: ringlb exits 1 naming seccomp. Either run with the profile in
# tuning/kubernetes/seccomp/ (the default profile plus the three io_uring calls; see its
# README for Kubernetes), or use the epoll engine, `[runtime] engine = "epoll"`, which needs no
# extra system call (being added; check `ringlb check --dump` for a `runtime.engine` key).
#
# Memory lock: io_uring's registered buffers count against RLIMIT_MEMLOCK
# (`runtime.io_memory` per worker, 512 KiB by default); Docker's default limit can be lower,
# hence `--ulimit memlock=-1` (or a finite value >= workers x io_memory).
#
# Capabilities: none. The image listens where its config says; in a container, listen on a port
# >= 1024 and publish it (`-p 80:8080`), or let unprivileged users bind low ports with
# `--sysctl net.ipv4.ip_unprivileged_port_start=0` (Docker sets this by default since 20.10).
# Run with `--cap-drop ALL`. (Outside containers, the systemd unit grants CAP_NET_BIND_SERVICE
# and nothing else.)
#
# Config: mount yours at /etc/ringlb/ringlb.toml. Relative certificate and key paths in it are
# relative to /etc/ringlb. The admin listener must listen on a non-loopback address (with a
# token) for probes from outside the container, e.g. Kubernetes httpGet on /ready.

# Builder: Cargo.lock's crates need Rust 1.88 at least. A C compiler (ring, mimalloc) comes
# with this image.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ringlb \
    && install -D -m 0755 target/release/ringlb /out/ringlb

# Runtime: glibc (the binary links it dynamically) and nothing else ringlb needs; it loads no
# system trust store (upstream TLS names its CA file).
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 ringlb \
    && useradd --system --uid 10001 --gid ringlb --home-dir /nonexistent --shell /usr/sbin/nologin ringlb \
    && install -d -o ringlb -g ringlb -m 0750 /etc/ringlb /var/log/ringlb
COPY --from=build /out/ringlb /usr/local/bin/ringlb
USER 10001:10001
WORKDIR /etc/ringlb
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ringlb"]
CMD ["run", "-c", "/etc/ringlb/ringlb.toml"]

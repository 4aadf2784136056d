#!/usr/bin/env bash
# `make bench`, second half: ringlb vs nginx vs HAProxy in one run (see benches/compare.py).
# Installs nginx and haproxy from Debian when missing. Takes about 12 minutes (QUICK=1: about 4).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null || ! command -v openssl >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy openssl >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 benches/compare.py

#!/usr/bin/env bash
# `make prereqs` (run by `make run`): says what is missing to build and run the demo, and how to
# get it, before a long build fails on it halfway.
set -uo pipefail
missing=0
need() { # need COMMAND WHY HOW
    if ! command -v "$1" >/dev/null 2>&1; then
        printf 'make run: %s not found: %s.\n  Install: %s\n' "$1" "$2" "$3" >&2
        missing=1
    fi
}
need "${CARGO:-cargo}" "the Rust toolchain builds ringlb" "https://rustup.rs (rustup), or apt-get install cargo"
# ring and mimalloc compile C code: cc (or $CC) must exist.
if ! command -v "${CC:-cc}" >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then
    echo "make run: no C compiler (cc, gcc or clang): the ring and mimalloc crates compile C code." >&2
    echo "  Install: apt-get install build-essential  (Fedora: dnf install gcc; Alpine: apk add build-base)" >&2
    missing=1
fi
need curl "the demo waits for /ready with it and the README's examples use it" "apt-get install curl"
exit "$missing"

# ringlb — `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
RELEASE := target/release

.PHONY: help prereqs run build test test-epoll test-uring lint unit bench bench-criterion fuzz soak ha-test ecmp-test bgp-drain ops-test clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build release binaries (ringlb, loadgen)
	$(CARGO) build --release --workspace --bins

run: prereqs build ## start 3 demo backends and ringlb on 127.0.0.1:8080 (admin :9901); Ctrl-C stops all
	@bash scripts/run-demo.sh

prereqs: ## check what `make run` needs: cargo, a C compiler (ring, mimalloc), curl
	@bash scripts/prereqs.sh

test: lint unit ## fmt check, clippy -D warnings, all unit and end-to-end tests

test-epoll: ## every test again with runtime.engine = "epoll" (RINGLB_TEST_ENGINE=epoll)
	RINGLB_TEST_ENGINE=epoll $(CARGO) test --workspace --no-fail-fast

test-uring: ## every test again with runtime.engine = "io_uring" (RINGLB_TEST_ENGINE=io_uring)
	RINGLB_TEST_ENGINE=io_uring $(CARGO) test --workspace --no-fail-fast

lint: ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: ## unit, property and end-to-end tests (debug build); the io_uring reactor's again on COOP_TASKRUN
	$(CARGO) test --workspace --no-fail-fast
	RINGLB_IO_URING_SETUP=coop_taskrun $(CARGO) test -p ringlb --lib uring_tests

bench: build ## criterion benches, then ringlb vs nginx vs HAProxy (writes benches/RESULTS.md)
	$(CARGO) bench --bench http1 --bench balance --bench metrics -- --warm-up-time 1 --measurement-time 3
	@if [ -x benches/compare.sh ]; then bash benches/compare.sh; fi

bench-criterion: ## only the criterion micro-benchmarks
	$(CARGO) bench --bench http1 --bench balance --bench metrics -- --warm-up-time 1 --measurement-time 3

fuzz: ## run each fuzz target for FUZZ_SECONDS (default 30) with cargo-fuzz
	@bash scripts/fuzz.sh $${FUZZ_SECONDS:-30}

soak: ## hold 10,000 keep-alive client connections through ringlb; prints its VmRSS
	$(CARGO) test --test exhaustion -- --ignored --nocapture soak_10k_keepalive_connections

ha-test: build ## two ringlb + keepalived hosts in network namespaces; kill the primary
	bash tuning/keepalived/ha-test.sh

ecmp-test: build ## two ringlb nodes behind a bird2 ECMP router in network namespaces
	bash tuning/bgp/ecmp-test.sh

bgp-drain: ## on a node: withdraw the VIP from BGP, wait, stop ringlb (DRAIN_ARGS=..., see drain.sh -h)
	bash tuning/bgp/drain.sh $(DRAIN_ARGS)

ops-test: build ## tuning scripts, systemd unit, Kubernetes manifests, seccomp profile, VRRP and ECMP
	bash tuning/test-apply.sh
	bash tuning/test-irq-affinity.sh
	bash tuning/systemd/verify.sh
	bash tuning/kubernetes/validate.sh
	bash tuning/kubernetes/seccomp/test-profile.sh
	bash tuning/keepalived/ha-test.sh
	bash tuning/bgp/ecmp-test.sh

clean: ## remove build output
	$(CARGO) clean

# provisioner — see README.md. Every target installs what it needs via scripts/deps.sh.
CARGO ?= cargo
# make fuzz: seconds per fuzz target (README.md, "Fuzzing": executions per target measured);
# make test runs each for FUZZ_SHORT_SECONDS. FUZZ_RUNS=N stops each after N inputs.
FUZZ_SECONDS ?= 2400
FUZZ_RUNS ?=
FUZZ_SHORT_SECONDS ?= 5
# make soak: how many times longer (or larger) than make test each load test runs.
SOAK ?= 10

.PHONY: all deps build release test lint unit rig demo bench soak fuzz fuzz-short ipk cross cross-test size clean

all: build

deps:
	@./scripts/deps.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Everything: formatting, lints, unit and property tests, and the netns rig (needs root).
test: deps lint
	$(CARGO) test --features rig,socks
	CARGO=$(CARGO) ./scripts/fuzz.sh $(FUZZ_SHORT_SECONDS)
	$(MAKE) cross-test TARGETS=mips-unknown-linux-musl

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --features rig,socks -- -D warnings

# Without root: unit, property and parser tests only.
unit:
	$(CARGO) test

rig: deps
	$(CARGO) test --features rig,socks --test '*'

# Brings up the rig, runs the daemon, shows a device reaching its cloud and being refused
# everywhere else, and tears it all down.
demo: deps
	$(CARGO) build
	$(CARGO) run --quiet --features rig --example demo

# On the netns rig, release builds, side by side (about three minutes): our DNS resolver
# against dnsmasq --nftset under dnsperf; join-to-admitted latency; TCP forwarding through
# our table against conntrack + masquerade alone (iperf3); control-plane latency (status,
# clients, evict over the socket and through ubus, at 10 and 250 clients); the SOCKS
# forwarder against a direct connection (throughput, CPU per MB, connection setup). Prints
# figures and ratios; not a test.
bench: deps
	$(CARGO) build --release
	PROVISIONER_BIN="$${CARGO_TARGET_DIR:-target}/release/provisioner" \
		$(CARGO) run --release --features rig --example bench
	$(CARGO) run --quiet --release --example bench_admission
	PROVISIONER_BIN="$${CARGO_TARGET_DIR:-target}/release/provisioner" \
		$(CARGO) run --quiet --release --features rig --example bench_forward
	PROVISIONER_BIN="$${CARGO_TARGET_DIR:-target}/release/provisioner" \
		$(CARGO) run --quiet --release --features rig --example bench_control
	PROVISIONER_BIN="$${CARGO_TARGET_DIR:-target}/release/provisioner" \
		$(CARGO) run --quiet --release --features rig,socks --example bench_socks

# The load tests (tests/soak.rs: association storm, DHCP starvation, DNS, SYN and UDP
# floods, hundreds of control connections) SOAK times longer, one at a time, against the
# release daemon (its memory is what a router sees); prints each one's figures. make test
# runs them short, against the debug build.
soak: deps
	$(CARGO) build --release
	rm -f "$${CARGO_TARGET_DIR:-target}/soak-report.txt"
	SOAK=$(SOAK) SOAK_REPORT="$${CARGO_TARGET_DIR:-target}/soak-report.txt" \
		PROVISIONER_BIN="$${CARGO_TARGET_DIR:-target}/release/provisioner" \
		$(CARGO) test --features rig --test soak -- --test-threads=1
	cat "$${CARGO_TARGET_DIR:-target}/soak-report.txt"

# Coverage-guided fuzzing (nightly, cargo-fuzz) of every parser of untrusted or kernel input:
# each target in fuzz/ for FUZZ_SECONDS, FUZZ_JOBS at once (default: all CPUs), built
# with overflow checks and debug assertions; prints the executions each ran. A short run
# of every target (which also replays fuzz/regressions/) is part of make test.
fuzz: deps
	FUZZ_RUNS=$(FUZZ_RUNS) CARGO=$(CARGO) ./scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-short: deps
	CARGO=$(CARGO) ./scripts/fuzz.sh $(FUZZ_SHORT_SECONDS)

# The OpenWrt package (.ipk) without the SDK (README.md, "Installing on a router"): builds
# the target's release binary (as make cross) and packs it. make ipk ARCH=mipsel_24kc|
# mips_24kc|arm_cortex-a7_neon-vfpv4|aarch64_cortex-a53 writes
# target/ipk/provisioner_<version>_<ARCH>.ipk.
IPK_ARCHS = mipsel_24kc mips_24kc arm_cortex-a7_neon-vfpv4 aarch64_cortex-a53
triple_mipsel_24kc = mipsel-unknown-linux-musl
triple_mips_24kc = mips-unknown-linux-musl
triple_arm_cortex-a7_neon-vfpv4 = armv7-unknown-linux-musleabihf
triple_aarch64_cortex-a53 = aarch64-unknown-linux-musl

ipk:
	@test -n "$(triple_$(ARCH))" || { echo "usage: make ipk ARCH=$(firstword $(IPK_ARCHS))|..., one of: $(IPK_ARCHS)" >&2; exit 2; }
	@CROSS_TARGETS="$(triple_$(ARCH))" ./scripts/deps.sh cross
	./scripts/cross.sh build $(triple_$(ARCH))
	./scripts/ipk.sh $(ARCH)

# OpenWrt cross builds (scripts/cross.sh; scripts/deps.sh cross installs the tools: nightly
# with rust-src for -Z build-std, zig and cargo-zigbuild, qemu-user-static). One target:
# make cross-test TARGETS=mips-unknown-linux-musl.
TARGETS ?= mipsel-unknown-linux-musl mips-unknown-linux-musl \
	armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl

# Release binaries: target/<triple>/release/provisioner.
cross:
	@CROSS_TARGETS="$(TARGETS)" ./scripts/deps.sh cross
	./scripts/cross.sh build $(TARGETS)

# Unit, core and parser tests (--lib) and tests/cli.rs, built for each target and run under
# qemu-user: big-endian MIPS and 32-bit ARM catch byte-order and word-size bugs.
cross-test:
	@CROSS_TARGETS="$(TARGETS)" ./scripts/deps.sh cross
	./scripts/cross.sh test $(TARGETS)

# The flash budget: builds (or reuses) the release binaries, prints each stripped size and
# fails over 2 MiB (SIZE_LIMIT).
size:
	@CROSS_TARGETS="$(TARGETS)" ./scripts/deps.sh cross
	./scripts/cross.sh size $(TARGETS)

clean:
	$(CARGO) clean

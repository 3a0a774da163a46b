# provisioner — see README.md. Every target installs what it needs via scripts/deps.sh.
CARGO ?= cargo
FUZZ_SECONDS ?= 60

.PHONY: all deps build release test lint unit rig demo bench fuzz ipk clean

all: build

deps:
	@./scripts/deps.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Everything: formatting, lints, unit and property tests, and the netns rig (needs root).
test: deps lint
	$(CARGO) test --features rig

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --features rig -- -D warnings

# Without root: unit, property and parser tests only.
unit:
	$(CARGO) test

rig: deps
	$(CARGO) test --features rig --test '*'

# Brings up the rig, runs the daemon, shows a device reaching its cloud and being refused
# everywhere else, and tears it all down.
demo: deps
	$(CARGO) build
	$(CARGO) run --quiet --features rig --example demo

# Our DNS resolver against dnsmasq --nftset under dnsperf on the netns rig, both release
# builds, one run side by side (about two minutes). Prints figures and ratios; not a test.
bench: deps
	$(CARGO) build --release
	PROVISIONER_BIN="$${CARGO_TARGET_DIR:-target}/release/provisioner" \
		$(CARGO) run --release --features rig --example bench
	$(CARGO) run --quiet --release --example bench_admission

# Coverage-guided fuzzing of the hand-written and untrusted-input parsers (nightly), built
# as shipped (-O: no debug assertions; dhcproto debug-asserts on option lengths).
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && for t in uci config_toml dhcp dns; do \
		$(CARGO) +nightly fuzz run -O $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; done

# The OpenWrt package (.ipk) from a `make cross` binary, without the SDK (README.md,
# "Installing on a router"): make ipk ARCH=mipsel_24kc|mips_24kc|arm_cortex-a7_neon-vfpv4|
# aarch64_cortex-a53. Writes target/ipk/provisioner_<version>_<ARCH>.ipk.
ipk:
	@test -n "$(ARCH)" || { echo "usage: make ipk ARCH=mipsel_24kc|mips_24kc|arm_cortex-a7_neon-vfpv4|aarch64_cortex-a53" >&2; exit 2; }
	./scripts/ipk.sh $(ARCH)

clean:
	$(CARGO) clean

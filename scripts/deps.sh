#!/bin/sh
# Install what `make test`, `make demo` and `make bench` need on a fresh Debian/Ubuntu
# machine. Idempotent: a second run installs nothing and takes a second.
#
# `scripts/deps.sh cross` instead installs what the OpenWrt cross builds need (`make cross`,
# `make cross-test`, `make size`), also idempotently: nightly with rust-src (every target
# is built with -Z build-std), zig (PyPI `ziglang`) as linker and libc, cargo-zigbuild and
# qemu-user-static. Versions are pinned here; CROSS_TARGETS limits the qemu check.
set -eu

# apt_install PKG...: installs the packages named (none: nothing to do).
apt_install() {
    [ $# -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: need root to install: $*" >&2
        exit 1
    fi
    echo "deps.sh: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the index when it is missing or stale (> 1 day).
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
        apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "${1:-}" = cross ]; then
    ZIGLANG_VERSION=0.15.2
    ZIGBUILD_VERSION=0.24.1
    targets=${CROSS_TARGETS:-"mipsel-unknown-linux-musl mips-unknown-linux-musl armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl"}
    # Every target is built by nightly with -Z build-std: MIPS is tier 3 (no prebuilt std),
    # and a std built with the binary is smaller (see `make size`).
    rustup run nightly rustc --version >/dev/null 2>&1 ||
        rustup toolchain install nightly --profile minimal --component rust-src
    rustup component list --toolchain nightly --installed | grep -q '^rust-src' ||
        rustup component add rust-src --toolchain nightly
    # zig from PyPI (cargo-zigbuild falls back to `python3 -m ziglang` without a `zig`).
    if ! python3 -m ziglang version 2>/dev/null | grep -qx "$ZIGLANG_VERSION"; then
        # A distribution's own Python refuses (PEP 668) unless told; a private one does not.
        python3 -m pip install -q --root-user-action=ignore "ziglang==$ZIGLANG_VERSION" 2>/dev/null ||
            python3 -m pip install -q --root-user-action=ignore --break-system-packages "ziglang==$ZIGLANG_VERSION"
    fi
    if ! cargo-zigbuild --version 2>/dev/null | grep -q " $ZIGBUILD_VERSION\$"; then
        cargo install -q --locked --version "$ZIGBUILD_VERSION" cargo-zigbuild
    fi
    pkgs=""
    for t in $targets; do
        case $t in
        mipsel-*) q=mipsel ;; mips-*) q=mips ;; armv7-*) q=arm ;; aarch64-*) q=aarch64 ;;
        *) continue ;;
        esac
        command -v "qemu-$q-static" >/dev/null 2>&1 || pkgs=qemu-user-static
    done
    apt_install $pkgs
    exit 0
fi

# make fuzz and the short fuzz run of make test: cargo-fuzz on the nightly toolchain.
CARGO_FUZZ_VERSION=0.13.2
rustup run nightly rustc --version >/dev/null 2>&1 ||
    rustup toolchain install nightly --profile minimal
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    cargo install -q --locked --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi

# Debian package -> a command it provides (checked before calling apt at all).
need_pkgs=""
want() { command -v "$2" >/dev/null 2>&1 || need_pkgs="$need_pkgs $1"; }
want nftables        nft
want iproute2        ip
want hostapd         hostapd
want wpasupplicant   wpa_supplicant
want dnsmasq-base    dnsmasq
want udhcpc          udhcpc
want iperf3          iperf3
want dnsperf         dnsperf
want bind9-dnsutils  dig
want procps          sysctl
want conntrack       conntrack
# make bench: forwarding with 1500-byte frames (segmentation offloads off).
want ethtool         ethtool
# tests/package.rs: lint the OpenWrt package's scripts, and run them in busybox's ash too.
want shellcheck      shellcheck
want busybox         busybox
# tests/metrics.rs: the prometheus-node-exporter-lua collector, in OpenWrt's Lua (5.1).
want lua5.1          lua5.1
# tests/quotas.rs: the wall clock jumping under the daemon (libfaketime, realtime only).
want faketime        faketime

# The OpenWrt kit (../shared/openwrt: OpenWrt's own uci, firewall4, ubus, rpcd, built from
# upstream source) for the tests against real OpenWrt components: its build dependencies.
KIT=${OPENWRT_KIT:-$(cd "$(dirname "$0")/.." && pwd)/../shared/openwrt}
if [ -x "$KIT/build.sh" ]; then
    want cmake cmake
    want pkg-config pkg-config
    pkg-config --exists json-c 2>/dev/null || need_pkgs="$need_pkgs libjson-c-dev"
fi

# shellcheck disable=SC2086 # a list of words
apt_install $need_pkgs

# ...and the kit itself, into target/openwrt (idempotent: a second run builds nothing).
if [ -x "$KIT/build.sh" ]; then
    top=$(cd "$(dirname "$0")/.." && pwd)
    "$KIT/build.sh" "$top/target/openwrt" >/dev/null ||
        { echo "deps.sh: building the OpenWrt kit ($KIT/build.sh) failed" >&2; exit 1; }
fi

# The packaged daemons must not run on the host: the rig starts its own copies in namespaces.
for svc in hostapd wpa_supplicant dnsmasq; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
exit 0

#!/bin/sh
# Install what `make test`, `make demo` and `make bench` need on a fresh Debian/Ubuntu
# machine. Idempotent: a second run installs nothing and takes a second.
set -eu

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

if [ -n "$need_pkgs" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps.sh: need root to install:$need_pkgs" >&2
        exit 1
    fi
    echo "deps.sh: installing$need_pkgs"
    export DEBIAN_FRONTEND=noninteractive
    # Only refresh the index when it is missing or stale (> 1 day).
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -n1)" ]; then
        apt-get update -qq
    fi
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need_pkgs >/dev/null
fi

# The packaged daemons must not run on the host: the rig starts its own copies in namespaces.
for svc in hostapd wpa_supplicant dnsmasq; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done
exit 0

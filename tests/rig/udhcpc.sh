#!/bin/sh
# udhcpc event script for the test rig (tests/rig/probes.rs, Rig::dhcp).
# Applies the lease with plain `ip` and prints one line the rig parses.
case "$1" in
deconfig)
	ip link set dev "$interface" up
	;;
bound | renew)
	# A renewal of the address it has changes nothing (connections on it stay as they
	# are); a new lease is applied afresh.
	if [ "$1" = bound ] || ! ip -4 addr show dev "$interface" | grep -q "inet $ip/"; then
		ip -4 addr flush dev "$interface"
		# busybox exports the prefix length as $mask; $subnet (dotted) is the fallback.
		ip addr add "$ip/${mask:-$subnet}" dev "$interface"
	fi
	if [ -n "$router" ]; then
		# Several routers may be offered; the first one is enough here.
		set -- $router
		ip route replace default via "$1" dev "$interface"
	fi
	echo "rig-udhcpc: bound $ip"
	;;
esac
exit 0

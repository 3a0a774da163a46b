#!/bin/sh
# Cross builds for OpenWrt routers, their tests under qemu-user, and the flash budget.
#
#   scripts/cross.sh build [TRIPLE...]   release binaries: target/<triple>/release/provisioner
#   scripts/cross.sh test  [TRIPLE...]   unit/core/parser tests (--lib) and tests/cli.rs,
#                                        built for the target and run under qemu-user
#   scripts/cross.sh size  [TRIPLE...]   build (or reuse) and print each stripped size; fails
#                                        over SIZE_LIMIT bytes (default 2 MiB)
#
# Without triples: all of CROSS_TARGETS below. `scripts/deps.sh cross` installs the tools:
# every target is built by nightly with -Z build-std (MIPS is tier 3, without a prebuilt
# std), linked by zig against its musl (cargo-zigbuild), which is musl 1.2 like OpenWrt's.
set -eu
cd "$(dirname "$0")/.."

CROSS_TARGETS="mipsel-unknown-linux-musl mips-unknown-linux-musl armv7-unknown-linux-musleabihf aarch64-unknown-linux-musl"
SIZE_LIMIT=${SIZE_LIMIT:-2097152}

# rustup's proxies (cargo, rustc) take the toolchain from here, also inside cargo-zigbuild.
export RUSTUP_TOOLCHAIN=nightly

# Every target: zig brings crt1.o and the rest of musl (there is no self-contained copy
# without a prebuilt std). rustc always names the missing <sysroot>/lib/rustlib/<triple>/lib
# to the linker, which zig reports on every link: that one message is silenced.
# libc_unstable_musl_v1_2: the libc crate's 64-bit time_t on 32-bit musl, as musl 1.2 (and
# so OpenWrt) has it; without it the binary would call musl's 32-bit compat symbols (2038).
COMMON_RUSTFLAGS="-C link-self-contained=no -A linker-messages --cfg libc_unstable_musl_v1_2"

# The shipped binary. The release profile (Cargo.toml) already has opt-level z, fat LTO, one
# codegen unit, panic = "abort" and strip. Here (see `make size`):
# - std is built with optimize_for_size (its small sorting and formatting code) and without
#   its `backtrace` feature: no symbolizer (gimli, addr2line, miniz_oxide) in a binary that
#   has no symbols to show anyway;
# - no unwind tables (.eh_frame): with panic = "abort" nothing unwinds;
# - a static, non-PIE executable, as rustc links every tier-2 musl target by default
#   (crt-static; MIPS leaves it off, and MIPS PIC code goes through the GOT everywhere);
# - 32-bit ARM in Thumb-2 (as rustc's thumbv7neon targets; every ARMv7 core runs it);
# - MIPS .pdr (procedure descriptors, never loaded) and .comment removed after the link.
# - no file:line:column in panic locations (-Z location-detail=none: 64 KB on mipsel, every
#   unwrap, index and overflow check carried one); panic messages stay (no
#   panic=immediate-abort), so a crash still says what went wrong in the log.
RELEASE_STD_FEATURES="optimize_for_size"
RELEASE_RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C force-unwind-tables=no -Z location-detail=none"
REMOVE_SECTIONS=".pdr .comment"

# Per target, for the release binary and the tests alike.
target_rustflags() {
    case $1 in
    armv7-*) echo "-C target-feature=+thumb-mode" ;;
    esac
}

qemu_for() {
    case $1 in
    mipsel-*) echo qemu-mipsel-static ;;
    mips-*) echo qemu-mips-static ;;
    armv7-* | arm-*) echo qemu-arm-static ;;
    aarch64-*) echo qemu-aarch64-static ;;
    *)
        echo "cross.sh: no qemu known for $1" >&2
        exit 2
        ;;
    esac
}

# CARGO_TARGET_<TRIPLE>_<what>, as cargo spells it.
var_for() {
    echo "CARGO_TARGET_$(echo "$1" | tr 'a-z.-' 'A-Z__')_$2"
}

target_dir() {
    echo "${CARGO_TARGET_DIR:-target}"
}

build() {
    t=$1
    echo "== build $t"
    env "$(var_for "$t" RUSTFLAGS)=$COMMON_RUSTFLAGS $(target_rustflags "$t") $RELEASE_RUSTFLAGS" \
        cargo-zigbuild zigbuild --release --target "$t" --bin provisioner \
        -Z build-std=std,panic_abort -Z build-std-features="$RELEASE_STD_FEATURES"
    f="$(target_dir)/$t/release/provisioner"
    set --
    for s in $REMOVE_SECTIONS; do set -- "$@" --remove-section="$s"; done
    # A new file, not the one cargo hard-linked from deps/ (left as the linker wrote it).
    objcopy "$@" "$f" "$f.tmp"
    mv "$f.tmp" "$f"
}

# rustc's own llvm-objcopy (knows every target; needs the toolchain's libLLVM).
objcopy() {
    sysroot=$(rustc --print sysroot)
    LD_LIBRARY_PATH="$sysroot/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-objcopy" "$@"
}

run_tests() {
    t=$1
    q=$(qemu_for "$t")
    echo "== test $t under $q"
    # The test profile unwinds (std with panic_unwind; zig brings libunwind). The kernel_*
    # tests of src/firewall/netlink.rs speak nfnetlink, and qemu-user refuses that socket
    # (it translates only rtnetlink, audit and uevent): skipped here, they run natively.
    # tests/cli.rs runs the binary through $q.
    # PROPTEST_CASES: a quarter of the property cases (the full count runs natively).
    env "$(var_for "$t" RUSTFLAGS)=$COMMON_RUSTFLAGS $(target_rustflags "$t")" \
        "$(var_for "$t" RUNNER)=$q" \
        PROVISIONER_TEST_RUNNER="$q" \
        PROPTEST_CASES="${PROPTEST_CASES:-64}" \
        cargo-zigbuild test --target "$t" -Z build-std --lib --test cli
}

size() {
    fail=0
    printf '%-34s %10s %8s\n' target bytes MiB
    for t in "$@"; do
        f="$(target_dir)/$t/release/provisioner"
        bytes=$(stat -c %s "$f")
        if command -v readelf >/dev/null 2>&1 && readelf -S "$f" | grep -q '\.symtab'; then
            echo "cross.sh: $f is not stripped" >&2
            fail=1
        fi
        verdict=ok
        if [ "$bytes" -gt "$SIZE_LIMIT" ]; then
            verdict="OVER the $SIZE_LIMIT-byte budget"
            fail=1
        fi
        printf '%-34s %10s %8s  %s\n' "$t" "$bytes" \
            "$(awk "BEGIN { printf \"%.2f\", $bytes / 1048576 }")" "$verdict"
    done
    return $fail
}

cmd=${1:-}
[ $# -gt 0 ] && shift
# shellcheck disable=SC2086 # a list of words
[ $# -gt 0 ] || set -- $CROSS_TARGETS
case $cmd in
build)
    for t in "$@"; do build "$t"; done
    ;;
test)
    for t in "$@"; do run_tests "$t"; done
    ;;
size)
    for t in "$@"; do build "$t"; done
    size "$@"
    ;;
*)
    echo "usage: $0 build|test|size [TRIPLE...]" >&2
    exit 2
    ;;
esac

#!/bin/sh
# Build the OpenWrt package (.ipk) from a `make cross` binary, without the OpenWrt SDK.
#
#   scripts/ipk.sh [-b BINARY] [-o OUTDIR] ARCH
#
# ARCH is an OpenWrt package architecture: mipsel_24kc, mips_24kc,
# arm_cortex-a7_neon-vfpv4 or aarch64_cortex-a53. BINARY defaults to
# ${CARGO_TARGET_DIR:-target}/<rust triple>/release/provisioner, OUTDIR to
# ${CARGO_TARGET_DIR:-target}/ipk. Prints the path of the .ipk it wrote.
#
# The package is the one openwrt/Makefile describes: its fields, scripts, conffiles and
# install section are read from there (the version from Cargo.toml), and it is put
# together the way OpenWrt's scripts/ipkg-build does (23.05, 24.10): a gzipped GNU tar of
# ./debian-binary ("2.0"), ./data.tar.gz and ./control.tar.gz, in that order (opkg looks
# the members up by name), each tar with members sorted by name, owned by root (numeric
# 0/0), Installed-Size being the size of the uncompressed data tar, and postinst/prerm the
# ones the SDK generates (default_postinst / default_prerm, which run postinst-pkg /
# prerm-pkg: the Makefile's own). Reproducible: every mtime is SOURCE_DATE_EPOCH (default:
# the last commit's time), gzip stores no name or time, so the same inputs give the same
# bytes. Needs POSIX sh, GNU tar (>= 1.28, for --sort=name) and gzip.

# shellcheck disable=SC2016 # '$(...)' below is make syntax, matched literally
set -eu

usage() {
    echo "usage: scripts/ipk.sh [-b BINARY] [-o OUTDIR] ARCH" >&2
    echo "  ARCH: mipsel_24kc | mips_24kc | arm_cortex-a7_neon-vfpv4 | aarch64_cortex-a53" >&2
    exit 2
}

die() {
    echo "ipk.sh: $*" >&2
    exit 1
}

root=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
binary=""
outdir=""
while getopts b:o:h opt; do
    case $opt in
    b) binary=$OPTARG ;;
    o) outdir=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
arch=$1

# OpenWrt architecture -> Rust target, and what its ELF header says (EI_DATA, e_machine).
case $arch in
mipsel_24kc) triple=mipsel-unknown-linux-musl elf="1 8" ;;
mips_24kc) triple=mips-unknown-linux-musl elf="2 8" ;;
arm_cortex-a7_neon-vfpv4) triple=armv7-unknown-linux-musleabihf elf="1 40" ;;
aarch64_cortex-a53) triple=aarch64-unknown-linux-musl elf="1 183" ;;
*) echo "ipk.sh: unknown ARCH '$arch'" >&2 && usage ;;
esac
[ -n "$binary" ] || binary=$target_dir/$triple/release/provisioner
[ -n "$outdir" ] || outdir=$target_dir/ipk
[ -f "$binary" ] || die "$binary is missing: run make cross first"

tar --version 2>/dev/null | grep -q 'GNU tar' || die "needs GNU tar (--sort=name, --owner, --mtime)"
printf "" | tar --sort=name -cf /dev/null -T - 2>/dev/null || die "needs GNU tar >= 1.28 (--sort=name)"

# An ELF binary must be for ARCH (a host build or another target's would not run there).
if [ "$(od -An -c -N4 "$binary" | tr -d ' ')" = '177ELF' ]; then
    data=$(od -An -tu1 -j5 -N1 "$binary" | tr -d ' ')
    if [ "$data" = 1 ]; then
        machine=$(od -An -tu1 -j18 -N2 "$binary" | awk '{ print $1 + 256 * $2 }')
    else
        machine=$(od -An -tu1 -j18 -N2 "$binary" | awk '{ print 256 * $1 + $2 }')
    fi
    [ "$data $machine" = "$elf" ] ||
        die "$binary is not a $triple binary (ELF data $data, machine $machine): run make cross first"
fi

makefile=$root/openwrt/Makefile
[ -f "$makefile" ] || die "$makefile is missing"

# A top-level `NAME:=value` of the Makefile, or one inside a define (indented); a value
# continued over lines (a trailing backslash) is joined into one, as make does.
mk_var() {
    sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}' "$makefile" |
        sed -n "s/^[[:space:]]*$1:=[[:space:]]*//p" | head -n1
}

# The body of `define Package/provisioner/$1` as make passes it on: $$ is $.
mk_define() {
    sed -n "/^define Package\/$pkg\/$1\$/,/^endef\$/p" "$makefile" | sed '1d;$d' |
        sed 's/\$\$/$/g'
}

pkg=$(mk_var PKG_NAME)
release=$(mk_var PKG_RELEASE)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
if [ -z "$pkg" ] || [ -z "$release" ] || [ -z "$version" ]; then
    die "cannot read PKG_NAME, PKG_RELEASE from $makefile or the version from Cargo.toml"
fi
# OpenWrt 24.10's VERSION: $(PKG_VERSION)-r$(PKG_RELEASE).
full_version=$version-r$release

# Depends as the SDK writes it: EXTRA_DEPENDS, then libc (every package's implicit
# dependency), then the +selected packages of DEPENDS (conditionals and @symbols are not
# package dependencies).
depends=""
add_depend() {
    case ", $depends, " in
    *", $1, "*) ;;
    *) depends=${depends:+$depends, }$1 ;;
    esac
}
for d in $(mk_var EXTRA_DEPENDS | tr ',' ' ') libc $(mk_var DEPENDS); do
    case $d in
    +*:* | @* | '$('*) ;;
    +*) add_depend "${d#+}" ;;
    *[!A-Za-z0-9._+-]*) ;;
    *) add_depend "$d" ;;
    esac
done

epoch=${SOURCE_DATE_EPOCH:-}
if [ -z "$epoch" ]; then
    epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || true)
fi
epoch=${epoch:-0}
case $epoch in
*[!0-9]*) die "SOURCE_DATE_EPOCH must be a number of seconds, not '$epoch'" ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/ipk.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
data=$work/data
ctrl=$work/control
mkdir -p "$data" "$ctrl"

# data: what Package/provisioner/install puts in $(1).
install_file() { # mode src dst
    case $2 in
    '$(PKG_INSTALL_DIR)/bin/'*) src=$binary ;;
    ./*) src=$root/openwrt/${2#./} ;;
    *) die "Package/$pkg/install: cannot tell where '$2' comes from" ;;
    esac
    [ -f "$src" ] || die "$src is missing"
    dst=$(expand_dst "$3")
    cp "$src" "$dst"
    chmod "$1" "$dst"
}
expand_dst() {
    case $1 in
    '$(1)/'*) printf '%s\n' "$data/${1#\$(1)/}" ;;
    *) die "Package/$pkg/install: destination '$1' is not under \$(1)" ;;
    esac
}
mk_define install | while IFS= read -r line; do
    # shellcheck disable=SC2086 # the words of a make recipe line
    set -- $line
    [ $# -gt 0 ] || continue
    cmd=$1
    shift
    case $cmd in
    '$(INSTALL_DIR)') for d in "$@"; do mkdir -p "$(expand_dst "$d")"; done ;;
    '$(INSTALL_BIN)') install_file 0755 "$@" ;;
    '$(INSTALL_DATA)') install_file 0644 "$@" ;;
    '$(INSTALL_CONF)') install_file 0600 "$@" ;;
    '$(LN)') ln -sf "$1" "$(expand_dst "$2")" ;;
    *) die "Package/$pkg/install: ipk.sh does not know '$cmd'" ;;
    esac
done
find "$data" -type d -exec chmod 0755 {} +

# control: the fields in package-pack.mk's order (an empty one is left out, as its
# addfield does).
field() {
    [ -z "$2" ] || echo "$1: $2"
}
conffiles=$(mk_define conffiles)
description=$(mk_define description)
{
    echo "Package: $pkg"
    echo "Version: $full_version"
    echo "Depends: $depends"
    echo "Source: package/$pkg"
    echo "SourceName: $pkg"
    echo "License: $(mk_var PKG_LICENSE)"
    field LicenseFiles "$(mk_var PKG_LICENSE_FILES)"
    echo "Section: $(mk_var SECTION)"
    echo "SourceDateEpoch: $epoch"
    field URL "$(mk_var URL)"
    echo "Maintainer: $(mk_var PKG_MAINTAINER)"
    echo "Architecture: $arch"
    echo "Installed-Size: 0"
    printf 'Description: '
    printf '%s\n' "$description" | sed -e 's/^[[:space:]]*/ /'
} >"$ctrl/control"
if [ -n "$conffiles" ]; then
    printf '%s\n' "$conffiles" | while IFS= read -r f; do
        [ -f "$data$f" ] || die "conffile $f is not in the package"
    done
    printf '%s\n' "$conffiles" | LC_ALL=C sort >"$ctrl/conffiles"
fi
cat >"$ctrl/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
EOF
cat >"$ctrl/prerm" <<'EOF'
#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
EOF
for s in postinst prerm; do
    body=$(mk_define "$s")
    [ -z "$body" ] || printf '%s\n' "$body" >"$ctrl/$s-pkg"
done
chmod 0644 "$ctrl/control"
[ ! -f "$ctrl/conffiles" ] || chmod 0644 "$ctrl/conffiles"
chmod 0755 "$ctrl"/postinst* "$ctrl"/prerm* "$ctrl"

mktar() { # dir output [members...]: a reproducible gzipped tar
    dir=$1
    out=$2
    shift 2
    [ $# -gt 0 ] || set -- .
    (cd "$dir" && tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name \
        --mtime="@$epoch" -cf - "$@") | gzip -n -9 >"$out"
}

pack=$work/pack
mkdir "$pack"
mktar "$data" "$pack/data.tar.gz"
size=$(gzip -dc "$pack/data.tar.gz" | wc -c | tr -d ' ')
sed "s/^Installed-Size: .*/Installed-Size: $size/" "$ctrl/control" >"$work/control.new"
cat "$work/control.new" >"$ctrl/control"
mktar "$ctrl" "$pack/control.tar.gz"
echo "2.0" >"$pack/debian-binary"
chmod 0644 "$pack"/*

mkdir -p "$outdir"
ipk=$outdir/${pkg}_${full_version}_$arch.ipk
mktar "$pack" "$work/out.ipk" ./debian-binary ./data.tar.gz ./control.tar.gz
mv "$work/out.ipk" "$ipk"
echo "$ipk"

#!/usr/bin/env bash
# The README's two commands on brand-new Debian 12 machines: debootstraps a
# minimal bookworm root (no host packages), copies in only the committed tree
# (git archive HEAD) and ../shared, and runs, as root in a checkout under
# root's 0700 home,
#     bash .ci/run
#     make demo
# exactly as the README writes them.  Succeeds only if both do, on every apt
# layout asked for:
#   deb822    /etc/apt/sources.list.d/debian.sources, as the debian:12 image
#   classic   the one-line /etc/apt/sources.list of Debian's installer
#   both      the two at once
# Usage: scripts/fresh-machine.sh [LAYOUT...]   (default: deb822 classic)
# Exits 0 when every layout passed, 1 when a command failed, 3 when no root
# could be built here at all (not root, no debootstrap, no mount).
# Needs root and debootstrap.  The machine's own setup, not the project's, is
# copied in too: DNS, and the host's private CA certificates
# (/usr/local/share/ca-certificates) for registries reached through them.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
LAYOUTS=("${@:-deb822}")
[ $# -gt 0 ] || LAYOUTS=(deb822 classic)
SUITE=bookworm
WORK=${LLMD_FRESH_DIR:-/var/tmp/llmd-fresh}

[ "$(id -u)" = 0 ] || { echo "fresh-machine: needs root (debootstrap, chroot)" >&2; exit 3; }
command -v debootstrap >/dev/null || { echo "fresh-machine: needs debootstrap (apt-get install debootstrap)" >&2; exit 3; }
mkdir -p "$WORK/.m1" "$WORK/.m2"
mount --bind "$WORK/.m1" "$WORK/.m2" 2>/dev/null && umount "$WORK/.m2" \
    || { echo "fresh-machine: cannot mount here (bind mounts are needed for /proc and /dev)" >&2; exit 3; }

# the host's Debian mirror, so the check works wherever the host's does
MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ' || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
MIRROR=${MIRROR%/}
SECURITY=${MIRROR%/debian}/debian-security

# Every mount point under $1, deepest first (mountinfo's fifth field, with
# its octal escapes undone).
mounts_under() {
    local dir=$1
    awk '{ print $5 }' /proc/self/mountinfo | while read -r m; do
        m=$(printf '%b' "$m")
        case $m in "$dir"|"$dir"/*) echo "$m" ;; esac
    done | sort -r
}

# Removes a root left by this script, never through a mount: a root from a
# run that was killed can still hold the host's /proc, /sys and /dev, and
# `rm -rf` across those would delete the host's own device nodes.  Returns 1
# (and removes nothing) when a mount would not go.
remove_root() {
    local dir=$1 m
    [ -e "$dir" ] || return 0
    kill_in_root "$dir"
    mounts_under "$dir" | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    if [ -n "$(mounts_under "$dir")" ]; then
        echo "fresh-machine: $dir still holds mounts; leaving it" >&2
        return 1
    fi
    rm -rf --one-file-system "$dir"
}

# whatever a test left running in a root holds its mounts
kill_in_root() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && kill -9 "${p#/proc/}" 2>/dev/null || true
    done
}

mounts=()
cleanup() {
    [ -n "${root:-}" ] && kill_in_root "$root"
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
    mounts=()
}
trap cleanup EXIT

bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mounts+=("$2"); }

# A /dev of the root's own (a tmpfs with the usual nodes), so that nothing
# done in the root, or to it, reaches the host's; the host's is bound only
# where nodes cannot be made.
make_dev() {
    local dev=$1/dev
    mkdir -p "$dev"
    mount -t tmpfs -o mode=755,nosuid tmpfs "$dev"; mounts+=("$dev")
    if mknod -m 666 "$dev/null" c 1 3 2>/dev/null && : > "$dev/null" 2>/dev/null; then
        mknod -m 666 "$dev/zero" c 1 5; mknod -m 666 "$dev/full" c 1 7
        mknod -m 666 "$dev/random" c 1 8; mknod -m 666 "$dev/urandom" c 1 9
        mknod -m 666 "$dev/tty" c 5 0
        ln -s /proc/self/fd "$dev/fd"; ln -s /proc/self/fd/0 "$dev/stdin"
        ln -s /proc/self/fd/1 "$dev/stdout"; ln -s /proc/self/fd/2 "$dev/stderr"
        mkdir -p "$dev/pts" "$dev/shm"
        bind /dev/pts "$dev/pts"; ln -s pts/ptmx "$dev/ptmx"
    else
        umount -l "$dev"; unset 'mounts[${#mounts[@]}-1]'
        bind /dev "$dev"; bind /dev/pts "$dev/pts"
    fi
    mount -t tmpfs tmpfs "$dev/shm"; mounts+=("$dev/shm")
    [ -c "$dev/null" ] || { echo "fresh-machine: no usable /dev/null for the root" >&2; return 1; }
}

# one debootstrap, copied for each layout
BASE=$WORK/base
# a base is kept between runs only while it looks whole
base_ok() {
    [ -f "$BASE/.complete" ] && [ -x "$BASE/usr/bin/env" ] && [ -x "$BASE/usr/bin/apt-get" ] \
        && [ -x "$BASE/usr/bin/dpkg" ] && [ -z "$(mounts_under "$BASE")" ]
}
# roots of earlier runs that were cut short
for old in "$WORK"/root.* "$WORK"/deb822 "$WORK"/classic "$WORK"/both; do
    [ -e "$old" ] && { remove_root "$old" || true; }
done
if ! base_ok; then
    remove_root "$BASE" || exit 3
    mkdir -p "$WORK"
    echo "fresh-machine: debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$BASE" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; echo "fresh-machine: debootstrap failed" >&2; exit 3; }
    mounts_under "$BASE" | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    touch "$BASE/.complete"
    base_ok || { echo "fresh-machine: debootstrap left an incomplete root" >&2; exit 3; }
fi

write_layout() {
    local root=$1 layout=$2
    rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*
    if [ "$layout" = deb822 ] || [ "$layout" = both ]; then
        cat > "$root/etc/apt/sources.list.d/debian.sources" <<END
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
END
    fi
    if [ "$layout" = classic ] || [ "$layout" = both ]; then
        cat > "$root/etc/apt/sources.list" <<END
deb $MIRROR/ $SUITE main non-free-firmware
# deb-src $MIRROR/ $SUITE main non-free-firmware

deb $SECURITY $SUITE-security main non-free-firmware
# deb-src $SECURITY $SUITE-security main non-free-firmware

deb $MIRROR/ $SUITE-updates main non-free-firmware
# deb-src $MIRROR/ $SUITE-updates main non-free-firmware
END
    fi
}

# Builds a new root for a layout in $root; 1 when it cannot (the machine's
# fault, not the project's).
build_root() {
    local layout=$1
    root=$(mktemp -d "$WORK/root.XXXXXX") || return 1
    cp -a "$BASE/." "$root/" || { echo "fresh-machine: [$layout] copying the base failed" >&2; return 1; }
    write_layout "$root" "$layout"
}

run_layout() {
    local layout=$1
    echo "fresh-machine: [$layout] new root"
    build_root "$layout" || return 3

    # the machine's setup: DNS, hosts and private CAs
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    cp /etc/hosts "$root/etc/hosts"
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true

    # the committed tree and the third-party references, under a 0700 home
    chmod 700 "$root/root"
    mkdir -p "$root/root/llmd"
    git -C "$TOP" archive HEAD | tar -x -C "$root/root/llmd"
    [ -d "$TOP/../shared" ] && cp -a "$TOP/../shared" "$root/root/shared"

    bind /proc "$root/proc"; bind /sys "$root/sys"
    make_dev "$root" || { cleanup; return 3; }
    mount -t tmpfs tmpfs "$root/tmp"; mounts+=("$root/tmp")

    in_root() {
        chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            LLMD_FRESH_MACHINE=1 ${CI:+CI=$CI} ${http_proxy:+http_proxy=$http_proxy} \
            ${https_proxy:+https_proxy=$https_proxy} ${no_proxy:+no_proxy=$no_proxy} \
            bash -c "$1"
    }

    if ls "$root"/usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
        in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null && update-ca-certificates >/dev/null'
    fi

    local t0=$SECONDS rc=0
    echo "fresh-machine: [$layout] cd /root/llmd && bash .ci/run"
    in_root 'cd /root/llmd && bash .ci/run' > "$WORK/$layout-ci.log" 2>&1 || rc=$?
    tail -5 "$WORK/$layout-ci.log" | sed "s/^/  [$layout] /"
    if [ $rc != 0 ]; then
        echo "fresh-machine: [$layout] bash .ci/run FAILED (rc $rc, log $WORK/$layout-ci.log)"
        tail -60 "$WORK/$layout-ci.log"
        cleanup; remove_root "$root" || true; return 1
    fi
    echo "fresh-machine: [$layout] bash .ci/run passed in $((SECONDS - t0)) s"

    t0=$SECONDS
    echo "fresh-machine: [$layout] cd /root/llmd && make demo"
    in_root 'cd /root/llmd && make demo' > "$WORK/$layout-demo.log" 2>&1 || rc=$?
    tail -3 "$WORK/$layout-demo.log" | sed "s/^/  [$layout] /"
    if [ $rc != 0 ]; then
        echo "fresh-machine: [$layout] make demo FAILED (rc $rc, log $WORK/$layout-demo.log)"
        tail -40 "$WORK/$layout-demo.log"
        cleanup; remove_root "$root" || true; return 1
    fi
    echo "fresh-machine: [$layout] make demo passed in $((SECONDS - t0)) s"
    cleanup
    remove_root "$root" || true
}

# a layout whose root could not be built is the machine's fault: it is
# skipped, loudly; when none could be, exit 3 lets the caller test here
failed=0 built=0
for layout in "${LAYOUTS[@]}"; do
    case $layout in deb822|classic|both) ;; *) echo "unknown layout $layout" >&2; exit 2 ;; esac
    rc=0
    run_layout "$layout" || rc=$?
    case $rc in
        0) built=1 ;;
        3) echo "fresh-machine: [$layout] SKIPPED: no root could be built" >&2; cleanup
           [ -n "${root:-}" ] && { remove_root "$root" || true; } ;;
        *) built=1; failed=1 ;;
    esac
done
[ $built = 1 ] || exit 3
[ $failed = 0 ] && echo "fresh-machine: ${LAYOUTS[*]}: both commands passed"
exit $failed

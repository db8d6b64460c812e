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

mounts=()
cleanup() {
    local p
    # whatever a test left running in the root holds its mounts
    for p in /proc/[0-9]*; do
        [ -n "${root:-}" ] && [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] \
            && kill -9 "${p#/proc/}" 2>/dev/null || true
    done
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -l "${mounts[i]}" 2>/dev/null || true; done
    mounts=()
}
trap cleanup EXIT

bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mounts+=("$2"); }

# one debootstrap, copied for each layout
BASE=$WORK/base
if [ ! -f "$BASE/.complete" ]; then
    rm -rf "$BASE"; mkdir -p "$WORK"
    echo "fresh-machine: debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase "$SUITE" "$BASE" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; echo "fresh-machine: debootstrap failed" >&2; exit 3; }
    touch "$BASE/.complete"
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

run_layout() {
    local layout=$1
    root=$WORK/$1
    echo "fresh-machine: [$layout] new root"
    rm -rf "$root"
    cp -a "$BASE" "$root"
    write_layout "$root" "$layout"

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
    bind /dev "$root/dev"; bind /dev/pts "$root/dev/pts"
    mount -t tmpfs tmpfs "$root/dev/shm"; mounts+=("$root/dev/shm")
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
        cleanup; return 1
    fi
    echo "fresh-machine: [$layout] bash .ci/run passed in $((SECONDS - t0)) s"

    t0=$SECONDS
    echo "fresh-machine: [$layout] cd /root/llmd && make demo"
    in_root 'cd /root/llmd && make demo' > "$WORK/$layout-demo.log" 2>&1 || rc=$?
    tail -3 "$WORK/$layout-demo.log" | sed "s/^/  [$layout] /"
    if [ $rc != 0 ]; then
        echo "fresh-machine: [$layout] make demo FAILED (rc $rc, log $WORK/$layout-demo.log)"
        tail -40 "$WORK/$layout-demo.log"
        cleanup; return 1
    fi
    echo "fresh-machine: [$layout] make demo passed in $((SECONDS - t0)) s"
    cleanup
    rm -rf "$root"
}

failed=0
for layout in "${LAYOUTS[@]}"; do
    case $layout in deb822|classic|both) ;; *) echo "unknown layout $layout" >&2; exit 2 ;; esac
    run_layout "$layout" || failed=1
done
[ $failed = 0 ] && echo "fresh-machine: ${LAYOUTS[*]}: both commands passed"
exit $failed

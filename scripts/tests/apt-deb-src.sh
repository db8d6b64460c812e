#!/usr/bin/env bash
# scripts/apt-deb-src.sh on the apt layouts Debian 12 machines come with, each
# in a scratch apt directory: apt itself (update --print-uris, which reads the
# configuration and fetches nothing) must then list one Sources index for
# every mirror and suite, with no duplicate, and a second run must change
# nothing.
set -euo pipefail

TOP=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d /tmp/llmd-apt-src.XXXXXX)
trap 'rm -rf "$T"' EXIT
PASS=0 FAIL=0

KEY=/usr/share/keyrings/debian-archive-keyring.gpg
deb822() {  # URI SUITES...: a deb822 stanza as the debian:12 image has it
    local uri=$1; shift
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: %s\n\n' "$uri" "$*" "$KEY"
}
installer_list() {  # MIRROR: the one-line sources.list Debian's installer writes
    cat <<END
#deb cdrom:[Debian GNU/Linux 12.8.0 _Bookworm_ - Official amd64 DVD Binary-1]/ bookworm contrib main
deb $1/ bookworm main non-free-firmware
# deb-src $1/ bookworm main non-free-firmware

deb http://security.debian.org/debian-security bookworm-security main non-free-firmware
deb-src http://security.debian.org/debian-security bookworm-security main non-free-firmware

deb $1/ bookworm-updates main non-free-firmware
END
}

# sources_uris DIR: "host/path suite" of every Sources index apt would fetch
sources_uris() {
    mkdir -p "$1/lists/partial"
    apt-get -o Dir::Etc::SourceList="$1/sources.list" -o Dir::Etc::SourceParts="$1/sources.list.d" \
        -o Dir::State::Lists="$1/lists" update --print-uris 2> "$1/apt.err" \
        | grep -oE "^'[a-z]+://[^']*/dists/[^/]+/main/source/Sources" \
        | sed -E "s|^'[a-z]+://||; s|/dists/([^/]+)/main/source/Sources| \1|"
}

# case NAME WANT...: WANT are the "host/path suite" Sources expected
case_() {
    local name=$1 d=$T/$1; shift
    local first second got want
    bash "$TOP/scripts/apt-deb-src.sh" "$d" > "$d/out" 2>&1
    first=$(cat "$d"/sources.list.d/llmd-deb-src.list 2>/dev/null || true)
    bash "$TOP/scripts/apt-deb-src.sh" "$d" >> "$d/out" 2>&1
    second=$(cat "$d"/sources.list.d/llmd-deb-src.list 2>/dev/null || true)
    got=$(sources_uris "$d" | sort)
    want=$(printf '%s\n' "$@" | sort)
    if [ "$got" = "$want" ] && [ "$first" = "$second" ] \
        && ! grep -q 'Sources.*configured multiple times\|^E:' "$d/apt.err" \
        && [ ! -e "$d/sources.list.d/llmd-src.sources" ]; then
        echo "ok - $name"; PASS=$((PASS + 1))
    else
        echo "not ok - $name"; FAIL=$((FAIL + 1))
        echo "  want: $(echo $want)"; echo "  got:  $(echo $got)"
        [ "$first" = "$second" ] || echo "  a second run changed the file"
        sed 's/^/  /' "$d/out" "$d/apt.err"
    fi
}

setup() { mkdir -p "$T/$1/sources.list.d"; }

setup deb822
deb822 http://deb.debian.org/debian bookworm bookworm-updates > "$T/deb822/sources.list.d/debian.sources"
deb822 http://deb.debian.org/debian-security bookworm-security >> "$T/deb822/sources.list.d/debian.sources"
case_ deb822 "deb.debian.org/debian bookworm" "deb.debian.org/debian bookworm-updates" \
    "deb.debian.org/debian-security bookworm-security"

setup classic
installer_list http://ftp.de.debian.org/debian > "$T/classic/sources.list"
case_ classic "ftp.de.debian.org/debian bookworm" "ftp.de.debian.org/debian bookworm-updates" \
    "security.debian.org/debian-security bookworm-security"

setup both
installer_list http://deb.debian.org/debian > "$T/both/sources.list"
deb822 http://deb.debian.org/debian bookworm bookworm-updates > "$T/both/sources.list.d/debian.sources"
case_ both "deb.debian.org/debian bookworm" "deb.debian.org/debian bookworm-updates" \
    "security.debian.org/debian-security bookworm-security"

setup already-enabled
printf 'Types: deb deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\nSigned-By: %s\n\n' "$KEY" \
    > "$T/already-enabled/sources.list.d/debian.sources"
printf 'Types: deb\nURIs: http://archive.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n' \
    >> "$T/already-enabled/sources.list.d/debian.sources"
case_ already-enabled "deb.debian.org/debian bookworm"

setup upgraded-from-old-file    # what earlier versions of .ci/run wrote is replaced
deb822 http://mirror.example/debian bookworm > "$T/upgraded-from-old-file/sources.list.d/debian.sources"
sed 's/^Types: deb$/Types: deb-src/' "$T/upgraded-from-old-file/sources.list.d/debian.sources" \
    > "$T/upgraded-from-old-file/sources.list.d/llmd-src.sources"
case_ upgraded-from-old-file "mirror.example/debian bookworm"

echo "apt-deb-src: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]

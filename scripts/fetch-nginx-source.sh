#!/usr/bin/env bash
# Downloads and unpacks Debian's nginx source for the sanitizer build, into
# DIR/nginx.  The version follows the installed nginx package (dpkg-query),
# so a point release changes nothing.  An archive may list a source it no
# longer (or not yet) serves; then the other listed sources of the same
# upstream version are tried, newest first: their patches differ only in
# security fixes, which do not matter to the module's tests.
# Usage: scripts/fetch-nginx-source.sh DIR
set -euo pipefail

dir=$1
installed=$(dpkg-query -W -f '${Version}' nginx 2>/dev/null) || true
[ -n "$installed" ] || { echo "the nginx package is not installed (.ci/run installs it)" >&2; exit 1; }
upstream=${installed%%-*}

listed=$(apt-cache showsrc nginx 2>/dev/null | awk '/^Version:/ { print $2 }' | sort -u)
[ -n "$listed" ] || {
    echo "apt knows no nginx source: is deb-src enabled? (scripts/apt-deb-src.sh enables it)" >&2
    exit 1
}

mkdir -p "$dir"
cd "$dir"
for v in "$installed" $(grep "^$upstream-" <<<"$listed" | grep -vxF "$installed" | sort -Vr); do
    rm -f nginx_*
    if apt-get source -qq --download-only "nginx=$v" >/dev/null 2>&1; then
        [ "$v" = "$installed" ] \
            || echo "nginx source $installed is not served; using $v, the newest of $upstream that is"
        rm -rf nginx
        dpkg-source -q -x "nginx_$v.dsc" nginx > dpkg-source.log 2>&1 \
            || { cat dpkg-source.log >&2; exit 1; }
        exit 0
    fi
done
echo "no nginx $upstream source could be downloaded (listed: $(echo $listed))" >&2
exit 1

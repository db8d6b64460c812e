#!/usr/bin/env bash
# The drop-in check: nginx's own test suite, run against Debian's nginx four
# ways, file by file:
#   stock         as nginx ships it
#   llmd          "llmd;" in every upstream {} block, the module loaded
#   direct        each direct proxy_pass/grpc_pass through a one-server
#                 upstream (the control: what the rewrite alone changes)
#   direct-llmd   that rewrite, with llmd in every upstream
# It fails when a test passes stock and fails with llmd, or passes in the
# control and fails with direct-llmd.  The suite is a third-party reference
# read from ../shared/nginx-tests (LLMD_NGINX_TESTS overrides): it runs from
# there, rewritten copies go to a temporary directory, and when it is absent
# the check is skipped.
# Usage: scripts/nginx-compat.sh [MODULE.so] [REPORT.md]
set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
SO=$(realpath "${1:-$TOP/build/ngx/ngx_llmd_module.so}")
REPORT=${2:-$TOP/build/nginx-compat/REPORT.md}
NT=${LLMD_NGINX_TESTS:-$TOP/../shared/nginx-tests}
NGINX=${LLMD_NGINX:-/usr/sbin/nginx}
JOBS=${JOBS:-4}

if [ ! -f "$NT/lib/Test/Nginx.pm" ]; then
    echo "nginx-compat: skipped: nginx's test suite is not at $NT (see ../shared/nginx-tests.md)"
    exit 0
fi
[ -f "$SO" ] || { echo "nginx-compat: no module at $SO (make module)" >&2; exit 1; }
NT=$(cd "$NT" && pwd)

W=$(mktemp -d /tmp/llmd-nginx-compat.XXXXXX)
trap 'rm -rf "$W"' EXIT
chmod 755 "$W"

# Test::Nginx adds load_module lines for every "=dynamic" module that -V
# lists, and Debian installs few of them: report none
cat > "$W/nginx" <<END
#!/bin/sh
if [ "\$1" = -V ]; then
    $NGINX -V 2>&1 | sed -E 's/ --with-[a-z0-9_]+=dynamic//g' >&2
    exit 0
fi
exec $NGINX "\$@"
END
chmod 755 "$W/nginx"

# the files that exercise upstreams, proxying and bodies over http; stream,
# mail and njs are other modules, and the hash, ip_hash, least_conn and
# random files test balancers that are alternatives to llmd
mapfile -t FILES < <(cd "$NT" && ls *.t \
    | grep -E 'upstream|proxy|body|keepalive|next_upstream|max_conns|zone|grpc' \
    | grep -vE '^(stream_|mail_|js_)|^upstream_(hash|ip_hash|least_conn|random)')

user=""; [ "$(id -u)" = 0 ] && user="user root; "

# variant NAME REWRITE-FLAGS...: the rewritten files, run, one TAP file each
variant() {
    local name=$1; shift
    local d=$W/$name
    mkdir -p "$d"
    ln -s "$NT/lib" "$d/lib"
    for f in "${FILES[@]}"; do
        if [ $# -gt 0 ]; then
            perl "$TOP/scripts/nginx-compat/rewrite.pl" "$@" "$NT/$f" > "$d/$f"
        else
            ln -s "$NT/$f" "$d/$f"
        fi
    done
    local globals=$user
    case " $* " in *" --llmd "*) globals="${user}load_module $SO;" ;; esac
    printf '%s\n' "${FILES[@]}" | (cd "$d" && TEST_NGINX_BINARY="$W/nginx" \
        TEST_NGINX_GLOBALS="$globals" xargs -P "$JOBS" -I{} \
        sh -c 'timeout 180 perl {} > {}.tap 2> {}.err || true')
}

echo "nginx-compat: ${#FILES[@]} files from $NT, four runs"
variant stock
variant llmd --llmd
variant direct --direct
variant direct-llmd --direct --llmd

mkdir -p "$(dirname "$REPORT")"
perl "$TOP/scripts/nginx-compat/compare.pl" "$W" "${FILES[@]}" | tee "$REPORT"
grep -q '^regressions: 0$' "$REPORT"

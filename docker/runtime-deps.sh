#!/bin/sh
# Print the Debian/Ubuntu packages that hold the shared libraries the given
# ELF files link against, one per line.  The build stage of each Dockerfile
# runs it so the run stage installs exactly those, whatever the base image.
set -eu
for f in "$@"; do
    ldd "$f" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
    # merged /usr: the library may be registered under either path
    for p in "$lib" "$(readlink -f "$lib")" "/usr$lib" "${lib#/usr}"; do
        pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1) || true
        [ -n "$pkg" ] && { echo "$pkg"; break; }
    done
done | grep -v '^libc6$' | sort -u

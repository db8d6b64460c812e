#!/usr/bin/env bash
# Turns on deb-src for every binary apt source this machine already uses, so
# that `apt-get source nginx` (the sanitizer build) works.  Reads both apt
# layouts: one-line entries (/etc/apt/sources.list, sources.list.d/*.list)
# and deb822 stanzas (sources.list.d/*.sources), keeping each entry's mirror,
# suites, components and signed-by.  Writes only the deb-src entries that are
# missing, once each, to one file of its own; running it again rewrites that
# file with the same content.  Usage: scripts/apt-deb-src.sh [APT_DIR]
set -euo pipefail

APT=${1:-/etc/apt}
OUT=$APT/sources.list.d/llmd-deb-src.list
OLD=$APT/sources.list.d/llmd-src.sources    # what earlier versions wrote

# every entry, one per line: TYPE URI SUITE SIGNED-BY COMPONENTS...
# (SIGNED-BY is "-" when the entry has none, or an inline key)
entries() {
    local f
    for f in "$APT/sources.list" "$APT"/sources.list.d/*.list; do
        [ -f "$f" ] && [ "$f" != "$OUT" ] || continue
        awk '
            /^[ \t]*(deb|deb-src)[ \t]/ {
                type = $1; i = 2; sb = "-"; enabled = 1
                if ($2 ~ /^\[/) {
                    for (; i <= NF; i++) {
                        o = $i; gsub(/[\[\]]/, "", o)
                        if (o ~ /^signed-by=/) { sb = substr(o, 11) }
                        if (o == "enabled=no") { enabled = 0 }
                        if ($i ~ /\]$/) { i++; break }
                    }
                }
                if (!enabled || i + 1 > NF) next
                uri = $i; suite = $(i + 1); comps = ""
                for (j = i + 2; j <= NF && $j !~ /^#/; j++) comps = comps " " $j
                sub(/\/+$/, "", uri)
                print type, uri, suite, sb comps
            }' "$f"
    done
    for f in "$APT"/sources.list.d/*.sources; do
        [ -f "$f" ] && [ "$f" != "$OLD" ] || continue
        awk '
            function flush(   t, u, s, nt, nu, ns, T, U, S) {
                if (types != "" && enabled) {
                    nt = split(types, T, " "); nu = split(uris, U, " ")
                    ns = split(suites, S, " ")
                    for (t = 1; t <= nt; t++) for (u = 1; u <= nu; u++)
                        for (s = 1; s <= ns; s++) {
                            x = U[u]; sub(/\/+$/, "", x)
                            print T[t], x, S[s], (sb == "" ? "-" : sb) " " comps
                        }
                }
                types = uris = suites = comps = sb = ""; enabled = 1; key = ""
            }
            BEGIN { enabled = 1 }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { next }                       # continuation (inline keys)
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "components") comps = val
                else if (key == "enabled") enabled = (tolower(val) != "no")
                else if (key == "signed-by") sb = (val ~ /^\// ? val : "-")
            }
            END { flush() }' "$f"
    done
}

all=$(entries)
have_src=$(awk '$1 == "deb-src" { print $2, $3 }' <<<"$all" | sort -u)

# one deb-src per mirror and suite that has none: the union of the
# components of its deb entries, and their signed-by (apt insists that all
# entries of one suite agree on it)
new=$(awk -v have="$have_src" '
    BEGIN { n = split(have, H, "\n"); for (i = 1; i <= n; i++) seen[H[i]] = 1 }
    $1 == "deb" && !seen[$2 " " $3] {
        k = $2 " " $3
        if (!(k in sb)) { order[++n_keys] = k; sb[k] = "-" }
        if ($4 != "-") sb[k] = $4
        for (i = 5; i <= NF; i++)
            if (!((k, $i) in has)) { has[k, $i] = 1; comps[k] = comps[k] " " $i }
    }
    END {
        for (i = 1; i <= n_keys; i++) {
            k = order[i]
            print "deb-src " (sb[k] == "-" ? "" : "[signed-by=" sb[k] "] ") k comps[k]
        }
    }' <<<"$all")

rm -f "$OLD"

if [ -z "$new" ]; then
    rm -f "$OUT"
    echo "apt-deb-src: deb-src already enabled for every source"
    exit 0
fi

{
    echo "# written by llmd's scripts/apt-deb-src.sh: deb-src for the sanitizer build"
    echo "$new"
} > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "apt-deb-src: $(wc -l <<<"$new") deb-src entries in $OUT"

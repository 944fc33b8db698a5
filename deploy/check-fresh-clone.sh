#!/usr/bin/env bash
# The fresh-clone check (issue #14): clone this repository's HEAD, run `make demo` as a new
# user would, and from a second shell `.venv/bin/andon sim pull L1 S03 --state var/demo/sim`
# as the README says; then Ctrl-C the demo and check it ended cleanly. Prints the first-run
# times (the venv, the firmware build and the boards' start included). Needs the network
# (pip) unless pip's cache has every package.
set -euo pipefail
src=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d)
demo=
cleanup() {
    [ -n "$demo" ] && kill -TERM -- "-$demo" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
git clone -q "$src" "$work/andon"
cd "$work/andon"
started=$(date +%s)
setsid make demo >demo.log 2>&1 &  # a process group of its own, as a terminal gives it
demo=$!
until grep -q "boards up" demo.log; do
    if ! kill -0 "$demo" 2>/dev/null; then
        cat demo.log
        echo "FAIL: make demo ended before its boards were up"
        exit 1
    fi
    sleep 1
done
up=$(date +%s)
pulled=$(.venv/bin/andon sim pull L1 S03 --state var/demo/sim)
[ "$pulled" = "L1/S03: cord pulled" ] || { echo "FAIL: the second shell got: $pulled"; exit 1; }
kill -INT -- "-$demo"  # Ctrl-C
code=0
wait "$demo" || code=$?
demo=
if [ "$code" != 0 ] || grep -q Traceback demo.log; then
    cat demo.log
    echo "FAIL: the demo ended with $code"
    exit 1
fi
echo "OK: make demo had the boards up in $((up - started)) s; the second shell pulled L1/S03;"
echo "    Ctrl-C ended it cleanly"

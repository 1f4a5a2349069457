#!/usr/bin/env bash
# The "never flakes" check of issue 18: two fresh clones of this repository, each running
# `make test` RUNS times in a row, side by side, so that every run has a second full suite
# running at the same time (on 2 cores: 4 test processes, 4 PostgreSQL clusters, 2 browsers).
#
#   bash bench/suite_side_by_side.sh [RUNS] [WORKDIR]      # defaults: 10, /tmp/side-by-side
#
# One line per run in WORKDIR/log; each run's output in WORKDIR/<clone>-<run>.out.
set -u
runs=${1:-10}
work=${2:-/tmp/side-by-side}
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
export REQUIRE_POSTGRES=1 REQUIRE_BROWSER=1
mkdir -p "$work"
: > "$work/log"
stream() {
    local name=$1 dir=$work/$1
    rm -rf "$dir"
    git clone -q "$repo" "$dir"
    (cd "$dir" && make -s .venv/.installed >/dev/null 2>&1)
    echo "$name at $(git -C "$dir" rev-parse --short HEAD)" >> "$work/log"
    for i in $(seq 1 "$runs"); do
        local started=$(date +%s)
        (cd "$dir" && make test > "$work/$name-$i.out" 2>&1)
        local status=$?
        echo "$(date +%H:%M:%S) $name run $i exit $status $(( $(date +%s) - started ))s" \
             "$(grep -E 'passed|failed' "$work/$name-$i.out" | tail -1)" >> "$work/log"
    done
}
stream a & stream b & wait
grep -c ' exit 0 ' "$work/log" | xargs -I{} echo "{} of $((2 * runs)) runs passed (see $work/log)"

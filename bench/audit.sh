#!/usr/bin/env bash
# The cost of the NEN 7513 audit trail on the message path: the same closed loop (zorg-bench
# closed) against a release build with [audit] enabled = false and = true, archive off in both
# so that only auditing differs. Prints delivered msgs/s and server CPU per message for each.
#
# Usage: cargo build --release -p zorg -p zorg-bench && bash bench/audit.sh
# Knobs: DURATION [10] seconds per loop, REPS [3], PAIRS [100], W [10], PORT [25722].
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
ZORG=${ZORG:-$repo/target/release/zorg}
BENCH=${BENCH:-$repo/target/release/zorg-bench}
DURATION=${DURATION:-10} REPS=${REPS:-3} PAIRS=${PAIRS:-100} W=${W:-10} PORT=${PORT:-25722}
[ -x "$ZORG" ] && [ -x "$BENCH" ] || { echo "build first: cargo build --release -p zorg -p zorg-bench" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/zorg-audit-bench.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

run() { # $1 = true|false
    local d="$work/audit-$1"
    mkdir -p "$d"
    cat >"$d/zorg.toml" <<TOML
data_dir = "data"
[[domain]]
name = "localhost"
[c2s]
listen = ["127.0.0.1:$PORT"]
direct_tls = ["127.0.0.1:$((PORT + 1))"]
sasl_iterations = 4096
[limits]
read_rate = 1073741824
max_unauthenticated = 100000
max_unauthenticated_per_ip = 1000000
connection_rate_per_ip = 1000000
connection_burst_per_ip = 1000000
login_failures_per_account = 1000000
login_failures_per_ip = 1000000
login_failures_per_ip_account = 1000000
[log]
level = "error"
[registration]
enabled = true
per_ip_per_hour = 1000000
[archive]
enabled = false
[audit]
enabled = $1
TOML
    "$ZORG" serve --config "$d/zorg.toml" >"$d/server.log" 2>&1 </dev/null &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    local S="--server 127.0.0.1:$PORT --domain localhost --server-pid $pid"
    timeout 300 "$BENCH" register $S --count $((PAIRS * 2)) >/dev/null
    for r in $(seq "$REPS"); do
        timeout $((DURATION + 120)) "$BENCH" closed $S --pairs "$PAIRS" --window "$W" --duration "$DURATION" \
            | tail -n 1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print("audit='"$1"' run '"$r"': %d msgs/s, lost %d, p99 %d us, server CPU %s" % (r["msgs_per_sec"], r["lost"], r["latency_us"]["p99"], r.get("server_cpu_us_per_msg", r.get("server", "?"))))'
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    if [ "$1" = true ]; then
        echo "audit=true: $(cat "$d"/data/audit/audit-*.jsonl | wc -l) audit records, $(du -sh "$d/data/audit" | cut -f1) on disk"
        local t0=$SECONDS
        "$ZORG" audit verify --config "$d/zorg.toml" | tail -n 2
        echo "verify took $((SECONDS - t0)) s"
    fi
}

run false
run true

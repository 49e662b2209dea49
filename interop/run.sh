#!/usr/bin/env bash
# Interop tests: real XMPP clients we did not write (slixmpp, go-sendxmpp) against a real
# `zorg serve` process.
#
# Usage: bash interop/run.sh [ZORG_BINARY] [PYTEST_ARGS...]
#   ZORG_BINARY defaults to target/debug/zorg in this repository; this script builds nothing.
#   Needs python3 with slixmpp and pytest, and go-sendxmpp on PATH (.ci/run installs them).
#   KEEP=1 keeps the temporary directory (config, data, server log) for a look afterwards.
#
# It creates a temporary directory with a config (domain localhost, c2s on loopback port 0: the
# system picks free ports and nothing can take them in between), creates the test accounts with
# `zorg user add --password-stdin`, starts `zorg serve`, reads the ports it got from its start-up
# summary, runs pytest on interop/test_slixmpp.py, and checks that the server then stops
# cleanly (exit 0) on SIGTERM. The server is killed on any exit.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
zorg=${1:-$here/../target/debug/zorg}
shift || true
if [ ! -x "$zorg" ]; then
    echo "interop: no zorg binary at $zorg; build it first (cargo build)" >&2
    exit 1
fi
zorg=$(realpath "$zorg")
python=${PYTHON:-python3}
# Absolute (without resolving symlinks: a virtualenv's python is one), as pytest runs elsewhere.
case "$python" in
*/*) python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")" ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/zorg-interop.XXXXXX")
server_pid=""
cleanup() {
    local rc=$?
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -f "$work/server.log" ]; then
        echo "---- last 80 lines of the server log ($work/server.log) ----" >&2
        tail -n 80 "$work/server.log" >&2 || true
    fi
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "interop: kept $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat >"$work/zorg.toml" <<EOF
data_dir = "data"

[[domain]]
name = "localhost"

[c2s]
listen = ["127.0.0.1:0"]
direct_tls = ["127.0.0.1:0"]
# go-sendxmpp (Debian bookworm, go-xmpp of 2022) knows only PLAIN, DIGEST-MD5 and X-OAUTH2.
# The slixmpp tests pin their SCRAM mechanism, so they still test SCRAM.
allow_plain = true

[log]
level = "info,zorg_server=debug"
EOF

# Every test account's password is "pw-<name>-interop" (test_slixmpp.py knows the rule).
accounts="alice bob carol dave erin frank grace henry ivy judy kate leo"
for name in $accounts; do
    printf 'pw-%s-interop\n' "$name" |
        "$zorg" user add "$name@localhost" --config "$work/zorg.toml" --password-stdin >/dev/null
done

"$zorg" serve --config "$work/zorg.toml" >"$work/server.out" 2>"$work/server.log" &
server_pid=$!

# Wait (at most 30 s) for the start-up summary, printed once every listener is bound, and read
# the two ports from it.
if ! ports=$("$python" - "$work/server.out" "$server_pid" <<'EOF'
import re, sys, time
out, pid = sys.argv[1], int(sys.argv[2])
want = {"starttls": r"^Clients \(STARTTLS\): 127\.0\.0\.1:(\d+)$",
        "direct": r"^Clients \(direct TLS, XEP-0368\): 127\.0\.0\.1:(\d+)$"}
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    with open(out) as f:
        text = f.read()
    found = {k: re.search(p, text, re.M) for k, p in want.items()}
    if all(found.values()):
        print(found["starttls"][1], found["direct"][1])
        sys.exit(0)
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    if state in ("Z", "X", "gone"):
        sys.exit("zorg serve exited during start-up")
    time.sleep(0.1)
sys.exit("zorg serve did not report its listening addresses within 30 s")
EOF
); then
    cat "$work/server.out" >&2 || true
    exit 1
fi
read -r port_starttls port_direct <<<"$ports"
echo "interop: zorg serve (pid $server_pid) listens on 127.0.0.1:$port_starttls (STARTTLS)" \
    "and 127.0.0.1:$port_direct (direct TLS); work dir $work"

export ZORG_INTEROP_HOST=127.0.0.1
export ZORG_INTEROP_DOMAIN=localhost
export ZORG_INTEROP_STARTTLS_PORT=$port_starttls
export ZORG_INTEROP_DIRECT_TLS_PORT=$port_direct
export ZORG_INTEROP_CA=$work/data/certs/localhost.crt
export ZORG_INTEROP_SERVER_PID=$server_pid
export ZORG_INTEROP_SERVER_LOG=$work/server.log
export ZORG_INTEROP_WORK=$work

status=0
(cd "$here" && "$python" -m pytest -v -p no:cacheprovider test_slixmpp.py "$@") || status=$?

# The last test stops the server with SIGTERM while a client is connected; if it did not run
# (deselected), stop it here; a second signal would mean "stop at once". Either way the server
# must exit 0 within 20 s.
if [ ! -e "$work/sigterm-sent" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
fi
# Our child stays a zombie ("Z" in /proc/PID/stat) until waited for: poll for that, 20 s at most.
exited() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || true
    [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]
}
for _ in $(seq 200); do
    exited "$server_pid" && break
    sleep 0.1
done
if ! exited "$server_pid"; then
    kill -KILL "$server_pid" 2>/dev/null || true
fi
server_status=0
wait "$server_pid" || server_status=$?
server_pid=""
if [ "$server_status" -eq 137 ]; then
    echo "interop: FAILED: zorg serve did not stop within 20 s of SIGTERM" >&2
    exit 1
elif [ "$server_status" -ne 0 ]; then
    echo "interop: FAILED: zorg serve exited with status $server_status after SIGTERM" >&2
    exit 1
fi
echo "interop: zorg serve stopped cleanly after SIGTERM"
exit "$status"

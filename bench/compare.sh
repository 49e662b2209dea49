#!/usr/bin/env bash
# Side-by-side benchmark of Zorg, Prosody and ejabberd on this machine, plus a bare TLS relay
# ("the speed of light"), with the load tool zorg-bench. See docs/performance.md.
#
# Usage: bash bench/compare.sh [--out FILE] [--servers "zorg prosody ejabberd"] [--no-relay]
#                              [--check] [--no-install] [--keep]
#   --out FILE     Markdown table of medians to write (default bench/results-latest.md); the raw
#                  JSON Lines and meta.json go to FILE without .md, plus "-raw/".
#   --servers L    which servers to run, in this order (space or comma separated).
#   --no-relay     skip the bare TLS baselines (relay for messages, TLS server for handshakes).
#   --check        only install, configure, start each server, check it with bench/xmpp_probe.py
#                  (STARTTLS and direct TLS, registration, SCRAM login, a message), stop it.
#   --no-install   do not apt-get anything (fail if Prosody or ejabberd is missing).
#   --keep         keep the work directory (configs, data, logs) even on success.
#
# Quick run:  DURATION=5 REPS=1 USERS_IDLE=1000 bash bench/compare.sh --out /tmp/quick.md
# Full run:   bash bench/compare.sh            (3 repetitions, 30 s loops, 1,000 and 5,000 idle)
#
# Environment (defaults in brackets):
#   REPS [3]  DURATION [30] s  PAIRS [100]  W [10] messages in flight per pair  RATE [1000] msgs/s
#   USERS_LOGIN [1000]  IN_FLIGHT [50]  USERS_IDLE ["1000 5000"]  HOLD [10] s
#   ACCOUNTS [5000, raised to what the measurements need]  THREADS [1] load generator threads
#   LOGIN_THREADS [2] load generator threads for logins and handshakes (with one, the client's
#        own TLS and SCRAM work caps the rate below what the servers can take)
#   RELAY_THREADS [nproc] threads of the bare relay server (Zorg's runtime uses every core too)
#   DIRECT_TLS [0] (1: measure over direct TLS instead of STARTTLS)
#   MECH (all servers) or MECH_ZORG [SCRAM-SHA-256] MECH_PROSODY [SCRAM-SHA-1: Prosody 0.12 has
#        no SCRAM-SHA-256] MECH_EJABBERD [SCRAM-SHA-256]
#   ZORG_PORT ZORG_DPORT PROSODY_PORT PROSODY_DPORT EJABBERD_PORT EJABBERD_DPORT EJABBERD_DIST_PORT
#        RELAY_PORT: the ports above, if they are taken
#   RUN_TIMEOUT [600] s per load-tool run  SETTLE [3] s pause between runs
#   LOGIN_PLAIN [0]: 1 adds a login measurement with SASL PLAIN (what ejabberd is fastest with)
#   IDLE_FRESH [1]: restart the server before each idle run (0: measure on the warm process)
#   BENCH [target/release/zorg-bench]  ZORG [target/release/zorg]  (this script builds nothing:
#        cargo build --release -p zorg -p zorg-bench)
#
# Runs as root on Debian bookworm (ejabberd runs as the ejabberd user, started with its own
# ejabberdctl), needs no standard input, and talks to 127.0.0.1 only. It installs prosody and
# ejabberd from Debian when missing and keeps the packages' own daemons stopped. Then for each
# server in turn, alone on the machine: a fresh directory with its own domain, certificate and
# config (ports zorg 25222/25223, prosody 25322/25323, ejabberd 25422/25423, relay 25522),
# start, probe, provision accounts bench0..bench{N-1} (password "bench") by in-band
# registration, the measurement set REPS times, stop. Every server and load-tool run is bounded
# by `timeout`; everything this script started is killed on exit.
set -euo pipefail
export LC_ALL=C
# The whole script is one block, read before it runs: editing the file during a run (they take
# long) cannot change what the running instance does.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "compare: $*"
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Options and parameters

out="$here/results-latest.md"
servers="zorg prosody ejabberd"
do_relay=1
check_only=0
do_install=1
keep=${KEEP:-0}
argv_text="bash bench/compare.sh $*"
while [ $# -gt 0 ]; do
    case $1 in
    --out) out=${2:?--out needs a file}; shift 2 ;;
    --servers) servers=${2//,/ }; shift 2 ;;
    --no-relay) do_relay=0; shift ;;
    --check) check_only=1; shift ;;
    --no-install) do_install=0; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done
case $out in /*) ;; *) out="$PWD/$out" ;; esac

REPS=${REPS:-3}
DURATION=${DURATION:-30}
PAIRS=${PAIRS:-100}
W=${W:-10}
RATE=${RATE:-1000}
USERS_LOGIN=${USERS_LOGIN:-1000}
IN_FLIGHT=${IN_FLIGHT:-50}
USERS_IDLE=${USERS_IDLE:-1000 5000}
USERS_IDLE=${USERS_IDLE//,/ }
HOLD=${HOLD:-10}
THREADS=${THREADS:-1}
LOGIN_THREADS=${LOGIN_THREADS:-2}
RELAY_THREADS=${RELAY_THREADS:-$(nproc)}
DIRECT_TLS=${DIRECT_TLS:-0}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
SETTLE=${SETTLE:-3}
IDLE_FRESH=${IDLE_FRESH:-1}
LOGIN_PLAIN=${LOGIN_PLAIN:-0}
BENCH=${BENCH:-$repo/target/release/zorg-bench}
ZORG=${ZORG:-$repo/target/release/zorg}
MECH_ZORG=${MECH_ZORG:-${MECH:-SCRAM-SHA-256}}
MECH_PROSODY=${MECH_PROSODY:-${MECH:-SCRAM-SHA-1}}
MECH_EJABBERD=${MECH_EJABBERD:-${MECH:-SCRAM-SHA-256}}

int_in() { # name value min max
    case $2 in '' | *[!0-9]*) die "$1 must be a whole number, not '$2'" ;; esac
    [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] || die "$1 must be between $3 and $4, not $2"
}
int_in REPS "$REPS" 1 20
int_in DURATION "$DURATION" 1 300
int_in PAIRS "$PAIRS" 1 10000
int_in W "$W" 1 1000
int_in RATE "$RATE" 1 1000000
int_in USERS_LOGIN "$USERS_LOGIN" 1 20000
int_in IN_FLIGHT "$IN_FLIGHT" 1 5000
int_in HOLD "$HOLD" 1 300
int_in THREADS "$THREADS" 1 64
int_in RELAY_THREADS "$RELAY_THREADS" 1 64
int_in RUN_TIMEOUT "$RUN_TIMEOUT" 10 3600
int_in SETTLE "$SETTLE" 0 60
need_accounts=$((USERS_LOGIN > 2 * PAIRS ? USERS_LOGIN : 2 * PAIRS))
for n in $USERS_IDLE; do
    int_in USERS_IDLE "$n" 1 20000
    [ "$n" -gt "$need_accounts" ] && need_accounts=$n
done
ACCOUNTS=${ACCOUNTS:-5000}
int_in ACCOUNTS "$ACCOUNTS" 1 20000
[ "$ACCOUNTS" -lt "$need_accounts" ] && ACCOUNTS=$need_accounts
for s in $servers; do
    case $s in zorg | prosody | ejabberd) ;; *) die "unknown server '$s' (zorg, prosody, ejabberd)" ;; esac
done
case $MECH_ZORG$MECH_PROSODY$MECH_EJABBERD in *[!A-Z0-9-]*) die "bad MECH" ;; esac

# Ports (loopback only). All below the ephemeral range (32768-60999 by default): thousands of
# client sockets of the load tool take ephemeral ports, and a server port among them may then
# be taken when that server starts.
zorg_port=${ZORG_PORT:-25222} zorg_dport=${ZORG_DPORT:-25223}
prosody_port=${PROSODY_PORT:-25322} prosody_dport=${PROSODY_DPORT:-25323}
ejabberd_port=${EJABBERD_PORT:-25422} ejabberd_dport=${EJABBERD_DPORT:-25423} ejabberd_dist_port=${EJABBERD_DIST_PORT:-25470}
relay_port=${RELAY_PORT:-25522}
read -r eph_lo eph_hi </proc/sys/net/ipv4/ip_local_port_range || eph_lo=32768 eph_hi=60999
for p in "$zorg_port" "$zorg_dport" "$prosody_port" "$prosody_dport" "$ejabberd_port" "$ejabberd_dport" "$ejabberd_dist_port" "$relay_port"; do
    int_in port "$p" 1024 65535
    if [ "$p" -ge "$eph_lo" ] && [ "$p" -le "$eph_hi" ]; then
        log "WARNING: port $p is in the ephemeral range $eph_lo-$eph_hi: a client socket may hold it"
    fi
done

# ---------------------------------------------------------------------------------------------
# Work directory and cleanup

# World-traversable: ejabberd runs as the ejabberd user and must reach its own subdirectory.
work=$(mktemp -d "${TMPDIR:-/tmp}/zorg-compare.XXXXXX")
chmod 755 "$work"
results="$work/results"
mkdir -p "$results" "$work/logs"
raw_dir="${out%.md}-raw"

cur_kind="" # the server running now: zorg, prosody, ejabberd or relay
cur_pid=""
srv_domain="" srv_port="" srv_dport="" srv_ca="" srv_mech="" # set once it is up
srv_logs=()
policy_created=0

kill_pid() { # pid seconds: SIGTERM, wait, then SIGKILL
    local pid=$1 secs=$2 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 4; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    log "pid $pid still alive after ${secs}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "$cur_pid" ]; then
        log "cleanup: stopping $cur_kind (pid $cur_pid)"
        kill_pid "$cur_pid" 15
    fi
    if [ "$policy_created" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
    if [ -d "$results" ] && ls "$results"/*.jsonl >/dev/null 2>&1; then
        rm -rf "$raw_dir" && mkdir -p "$raw_dir/logs" &&
            cp "$results"/* "$raw_dir"/ 2>/dev/null
        cp "$work"/logs/* "$raw_dir/logs/" 2>/dev/null
    fi
    if [ "$keep" = 1 ] || [ "$rc" -ne 0 ]; then
        log "work directory kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Helpers

port_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" 2>/dev/null; }

# wait_port PORT PID SECS [LOG PATTERN]: until PORT accepts connections; fails if PID dies, LOG
# matches PATTERN (a server that logs its failure and goes on running) or time runs out.
wait_port() {
    local port=$1 pid=$2 secs=$3 logf=${4:-} pat=${5:-} i
    for ((i = 0; i < secs * 4; i++)); do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid exited before port $port opened"
            return 1
        fi
        if [ -n "$logf" ] && [ -f "$logf" ] && grep -Eq "$pat" "$logf"; then
            log "$(grep -E "$pat" "$logf" | head -n 3)"
            return 1
        fi
        port_open "$port" && return 0
        sleep 0.25
    done
    log "port $port not open after ${secs}s"
    return 1
}

# wait_file FILE SECS: until FILE exists and is not empty.
wait_file() {
    local f=$1 secs=$2 i
    for ((i = 0; i < secs * 4; i++)); do
        [ -s "$f" ] && return 0
        sleep 0.25
    done
    return 1
}

ports_free() {
    local p
    for p in "$@"; do
        if port_open "$p"; then
            log "127.0.0.1:$p is already in use: stop whatever listens there (ss -ltnp) or choose other ports (--help)"
            return 1
        fi
    done
}

# make_cert DOMAIN DIR: DIR/cert.pem, DIR/key.pem (self-signed P-256, 30 days).
make_cert() {
    timeout 60 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=$1" -addext "subjectAltName=DNS:$1" \
        -keyout "$2/key.pem" -out "$2/cert.pem" 2>"$2/openssl.log" || die "openssl failed: $(cat "$2/openssl.log")"
}

cpu_s_of() { # utime+stime of PID in seconds
    awk -v tck="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); print ($12 + $13) / tck }' "/proc/$1/stat" 2>/dev/null || echo 0
}
rss_kib_of() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

cpu_busy_pct() { # share of all cores busy over the next 2 seconds, from /proc/stat
    local a b
    a=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9 }' /proc/stat)
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

machine_busy_note() {
    local busy others
    busy=$(cpu_busy_pct)
    others=$(ps -eo comm= | grep -E '^(cargo|rustc|cc1|cc1plus|ld|beam.smp|lua5\.[0-9]|zorg|zorg-bench)$' | sort | uniq -c | tr -s ' ' | paste -sd, - || true)
    log "CPU ${busy}% busy before the run (load average $(cut -d' ' -f1-3 /proc/loadavg))${others:+; running: $others}"
    if [ "$busy" -gt 20 ]; then
        log "WARNING: the machine is not idle (${busy}% of the CPU busy): the figures will be lower than they should"
    fi
}

# ---------------------------------------------------------------------------------------------
# Installing Prosody and ejabberd

stop_package_daemons() {
    local pid
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        timeout 60 systemctl disable --now prosody.service ejabberd.service >/dev/null 2>&1 || true
    elif command -v update-rc.d >/dev/null; then
        update-rc.d prosody disable >/dev/null 2>&1 || true
        update-rc.d ejabberd disable >/dev/null 2>&1 || true
    fi
    if [ -s /run/prosody/prosody.pid ]; then
        pid=$(cat /run/prosody/prosody.pid)
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping the prosody package's daemon (pid $pid)"
            timeout 30 prosodyctl stop >/dev/null 2>&1 || true
            kill_pid "$pid" 10
        fi
    fi
    if [ -s /run/ejabberd/ejabberd.pid ]; then
        pid=$(cat /run/ejabberd/ejabberd.pid)
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping the ejabberd package's daemon (pid $pid)"
            timeout 60 ejabberdctl stop >/dev/null 2>&1 || true
            kill_pid "$pid" 30
        fi
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

ensure_packages() {
    local need=()
    installed prosody || need+=(prosody)
    installed ejabberd || need+=(ejabberd)
    command -v openssl >/dev/null || need+=(openssl)
    command -v python3 >/dev/null || need+=(python3)
    if [ ${#need[@]} -gt 0 ]; then
        [ "$do_install" = 1 ] || die "missing: ${need[*]} (and --no-install was given)"
        [ "$(id -u)" = 0 ] || die "installing ${need[*]} needs root"
        log "installing ${need[*]} from Debian"
        # Keep the postinst scripts from starting the packages' daemons (the standard Debian hook).
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            policy_created=1
        fi
        timeout 900 apt-get update -qq </dev/null >"$work/logs/apt.log" 2>&1 || die "apt-get update failed (see $work/logs/apt.log)"
        DEBIAN_FRONTEND=noninteractive timeout 1800 apt-get install -y -q "${need[@]}" </dev/null \
            >>"$work/logs/apt.log" 2>&1 || die "apt-get install failed (see $work/logs/apt.log)"
        if [ "$policy_created" = 1 ]; then
            rm -f /usr/sbin/policy-rc.d
            policy_created=0
        fi
    fi
    stop_package_daemons
}

# ---------------------------------------------------------------------------------------------
# Zorg

zorg_offline_provision=0

start_zorg() { setup_zorg && launch_zorg; }

setup_zorg() {
    local d="$work/zorg"
    mkdir -p "$d"
    make_cert zorg.test "$d"
    local per_ip=1000000
    write_zorg_config "$d" "$per_ip"
    if ! "$ZORG" config check "$d/zorg.toml" >"$d/config-check.log" 2>&1; then
        if grep -q per_ip_per_hour "$d/config-check.log"; then
            # Older builds cap registrations per address at 1,000 an hour: provision offline.
            log "zorg: this build refuses per_ip_per_hour = $per_ip; creating the accounts with 'zorg user add' instead"
            per_ip=1000
            zorg_offline_provision=1
            write_zorg_config "$d" "$per_ip"
            "$ZORG" config check "$d/zorg.toml" >"$d/config-check.log" 2>&1 || die "zorg config check: $(cat "$d/config-check.log")"
        else
            die "zorg config check: $(cat "$d/config-check.log")"
        fi
    fi
    if [ "$zorg_offline_provision" = 1 ] && [ "$check_only" = 0 ]; then
        zorg_provision_offline "$d"
    fi
}

launch_zorg() {
    local d="$work/zorg"
    ports_free "$zorg_port" "$zorg_dport" || return 1
    "$ZORG" serve --config "$d/zorg.toml" >>"$d/server.log" 2>&1 </dev/null &
    cur_kind=zorg cur_pid=$!
    disown "$cur_pid" # no "Killed" notice from bash if it must be killed; kill_pid polls it
    if ! wait_port "$zorg_port" "$cur_pid" 60 || ! wait_port "$zorg_dport" "$cur_pid" 10; then
        tail -n 30 "$d/server.log" >&2
        return 1
    fi
    srv_domain=zorg.test srv_port=$zorg_port srv_dport=$zorg_dport srv_ca="$d/cert.pem" srv_mech=$MECH_ZORG
    srv_logs=("$d/server.log")
}

write_zorg_config() {
    cat >"$1/zorg.toml" <<EOF
# zorg-compare: Zorg on loopback for bench/compare.sh
data_dir = "data"

[[domain]]
name = "zorg.test"
certificate = "cert.pem"
key = "key.pem"

[c2s]
listen = ["127.0.0.1:$zorg_port"]
direct_tls = ["127.0.0.1:$zorg_dport"]
allow_plain = true
sasl_iterations = 4096

# No rate limit may throttle the load generator (the peers' shapers are off too).
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
level = "warn"

[registration]
enabled = true
per_ip_per_hour = $2
EOF
}

zorg_provision_offline() {
    local d=$1 i fails=0 t0=$SECONDS
    log "zorg: creating $ACCOUNTS accounts offline (zorg user add, one process each)"
    for ((i = 0; i < ACCOUNTS; i++)); do
        printf 'bench\n' | timeout 60 "$ZORG" user add --config "$d/zorg.toml" --password-stdin "bench$i@zorg.test" \
            >/dev/null 2>>"$d/user-add.log" || fails=$((fails + 1))
        if [ $((SECONDS - t0)) -gt 3600 ]; then
            die "zorg: offline provisioning took more than an hour"
        fi
    done
    [ "$fails" = 0 ] || log "zorg: $fails of $ACCOUNTS 'zorg user add' failed (see $d/user-add.log)"
}

# ---------------------------------------------------------------------------------------------
# Prosody

start_prosody() { setup_prosody && launch_prosody; }

setup_prosody() {
    local d="$work/prosody"
    mkdir -p "$d/data" "$d/certs"
    make_cert prosody.test "$d"
    # Prosody also indexes a certificate directory, by host name.
    cp "$d/cert.pem" "$d/certs/prosody.test.crt"
    cp "$d/key.pem" "$d/certs/prosody.test.key"
    cat >"$d/prosody.cfg.lua" <<EOF
-- zorg-compare: Prosody on loopback for bench/compare.sh
run_as_root = true -- it refuses to run as root otherwise (it would switch to the prosody user)
pidfile = "$d/prosody.pid"
data_path = "$d/data"
plugin_paths = {}
certificates = "$d/certs"
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
use_ipv6 = false
-- The default listen backlog is 128; ejabberd's is raised the same way.
network_settings = { tcp_backlog = 1024 }
c2s_ports = { $prosody_port }
c2s_direct_tls_ports = { $prosody_dport }
s2s_ports = {}
http_ports = {}
https_ports = {}
-- No mod_limits (the Debian config limits c2s to 10 kB/s), no smacks, carbons, MAM, PEP.
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "register" }
modules_disabled = { "s2s"; "s2s_auth_certs" }
authentication = "internal_hashed"
default_iteration_count = 4096
c2s_require_encryption = true
-- In-band registration; mod_register_limits throttles nothing unless
-- min_seconds_between_registrations or registration_throttle_max is set, and 127.0.0.1 is on its
-- default allowlist anyway.
allow_registration = true
registration_allowlist = { "127.0.0.1" }
ssl = { certificate = "$d/cert.pem"; key = "$d/key.pem" }
log = { warn = "$d/prosody.log" }

VirtualHost "prosody.test"
	ssl = { certificate = "$d/cert.pem"; key = "$d/key.pem" }
EOF
}

launch_prosody() {
    local d="$work/prosody"
    ports_free "$prosody_port" "$prosody_dport" || return 1
    # Failure patterns are looked for in this log below: start it empty (logs/ keeps earlier lines).
    if [ -s "$d/prosody.log" ]; then cat "$d/prosody.log" >>"$d/prosody.log.old"; fi
    : >"$d/prosody.log"
    prosody --config "$d/prosody.cfg.lua" -F >>"$d/stdout.log" 2>&1 </dev/null &
    # /usr/bin/prosody is a Lua script run through env: the process is lua5.4 with this pid.
    cur_kind=prosody cur_pid=$!
    disown "$cur_pid"
    # Prosody goes on running when it cannot bind a port or load a module: watch its log too.
    local fatal='Failed to open server port|Error binding|Unable to load module|Failed to load|Error loading'
    if ! wait_port "$prosody_port" "$cur_pid" 60 "$d/prosody.log" "$fatal" ||
        ! wait_port "$prosody_dport" "$cur_pid" 10 "$d/prosody.log" "$fatal"; then
        tail -n 30 "$d/stdout.log" "$d/prosody.log" >&2 2>/dev/null
        return 1
    fi
    if wait_file "$d/prosody.pid" 10 && [ "$(cat "$d/prosody.pid")" != "$cur_pid" ]; then
        log "prosody: pid file says $(cat "$d/prosody.pid"), not $cur_pid: using the pid file"
        cur_pid=$(cat "$d/prosody.pid")
    fi
    srv_domain=prosody.test srv_port=$prosody_port srv_dport=$prosody_dport srv_ca="$d/cert.pem" srv_mech=$MECH_PROSODY
    srv_logs=("$d/prosody.log" "$d/prosody.log.old" "$d/stdout.log")
}

# ---------------------------------------------------------------------------------------------
# ejabberd

# ejabberdctl as the ejabberd user. Not through su, as ejabberdctl does when run by root: su goes
# through PAM (pam_limits), which lowers the open-files soft limit to 1024, and ejabberd then
# silently stops accepting connections at about 1,000. setpriv keeps this script's limits; HOME
# is where erl keeps the node's cookie.
ejabberdctl_cmd() {
    local d="$work/ejabberd"
    timeout "${EJ_TIMEOUT:-60}" env HOME="$d" setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
        ejabberdctl --config-dir "$d" --config "$d/ejabberd.yml" --ctl-config "$d/ejabberdctl.cfg" \
        --logs "$d/logs" --spool "$d/spool" "$@"
}

start_ejabberd() { setup_ejabberd && launch_ejabberd; }

setup_ejabberd() {
    local d="$work/ejabberd"
    mkdir -p "$d/logs" "$d/spool"
    make_cert ejabberd.test "$d"
    # ejabberd wants the certificate and its key in one file.
    cat "$d/cert.pem" "$d/key.pem" >"$d/ejabberd.pem"
    rm -f "$d/key.pem"
    # Erlang reads inetrc from the config directory.
    if [ -f /etc/ejabberd/inetrc ]; then cp /etc/ejabberd/inetrc "$d/inetrc"; else echo '{lookup,["file","native"]}.' >"$d/inetrc"; fi
    cat >"$d/ejabberd.yml" <<EOF
# zorg-compare: ejabberd on loopback for bench/compare.sh
hosts:
  - ejabberd.test
loglevel: warning
log_rotate_count: 0
log_rotate_size: infinity
certfiles:
  - "$d/ejabberd.pem"
c2s_ciphers: "HIGH:!aNULL:!eNULL:!3DES:@STRENGTH"
c2s_protocol_options:
  - "no_sslv3"
  - "no_tlsv1"
  - "no_tlsv1_1"
  - "cipher_server_preference"
  - "no_compression"
# shaper: none (the Debian config limits c2s to 3,000 B/s); backlog: the default is 5.
listen:
  -
    port: $ejabberd_port
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: c2s
    starttls_required: true
    backlog: 1024
  -
    port: $ejabberd_dport
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: c2s
    tls: true
    backlog: 1024
disable_sasl_mechanisms:
  - "digest-md5"
  - "X-OAUTH2"
auth_method: internal
# Stored SCRAM-SHA-256 keys: no PBKDF2 per SCRAM login (PLAIN then costs one).
auth_password_format: scram
auth_scram_hash: sha256
registration_timeout: infinity
# The default cache_size is 1,000 entries (auth, roster…): with 5,000 users it keeps shrinking.
cache_size: 20000
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
  register:
    allow: all
shaper_rules:
  max_user_sessions: 10
modules:
  mod_disco: {}
  mod_offline: {}
  mod_ping: {}
  mod_roster: {}
  mod_register:
    access: register
    ip_access: all
EOF
    # ejabberdctl.cfg is sourced by ejabberdctl (a shell script). A fixed distribution port means no
    # epmd daemon at all; the node and its control clients meet on 127.0.0.1:$ejabberd_dist_port.
    cat >"$d/ejabberdctl.cfg" <<EOF
ERLANG_NODE=zorg-compare@localhost
INET_DIST_INTERFACE=127.0.0.1
ERL_DIST_PORT=$ejabberd_dist_port
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH=$d/ejabberd.pid
EJABBERD_BYPASS_WARNINGS=true
EOF
    chown -R ejabberd:ejabberd "$d"
    chmod 600 "$d/ejabberd.pem"
}

launch_ejabberd() {
    local d="$work/ejabberd"
    ports_free "$ejabberd_port" "$ejabberd_dport" "$ejabberd_dist_port" || return 1
    rm -f "$d/ejabberd.pid"
    ejabberdctl_cmd start >>"$d/start.log" 2>&1 || {
        cat "$d/start.log" >&2
        return 1
    }
    if ! wait_file "$d/ejabberd.pid" 60; then
        log "ejabberd wrote no pid file"
        tail -n 30 "$d/logs/ejabberd.log" "$d/logs/error.log" >&2 2>/dev/null
        return 1
    fi
    cur_kind=ejabberd cur_pid=$(cat "$d/ejabberd.pid")
    if ! wait_port "$ejabberd_port" "$cur_pid" 90 || ! wait_port "$ejabberd_dport" "$cur_pid" 10; then
        tail -n 30 "$d/logs/ejabberd.log" "$d/logs/error.log" >&2 2>/dev/null
        return 1
    fi
    local comm
    comm=$(cat "/proc/$cur_pid/comm" 2>/dev/null || true)
    [ "$comm" = beam.smp ] || log "ejabberd: pid $cur_pid is '$comm', not beam.smp"
    EJ_TIMEOUT=60 ejabberdctl_cmd status >>"$d/start.log" 2>&1 || log "ejabberd: 'ejabberdctl status' failed (see $d/start.log)"
    srv_domain=ejabberd.test srv_port=$ejabberd_port srv_dport=$ejabberd_dport srv_ca="$d/cert.pem" srv_mech=$MECH_EJABBERD
    srv_logs=("$d/logs/ejabberd.log" "$d/logs/error.log")
}

# ---------------------------------------------------------------------------------------------
# Stopping the current server

stop_server() {
    local pid=$cur_pid kind=$cur_kind
    [ -n "$pid" ] || return 0
    wait_quiet
    log "$kind: stopping (pid $pid)"
    case $kind in
    ejabberd)
        EJ_TIMEOUT=60 ejabberdctl_cmd stop >>"$work/ejabberd/start.log" 2>&1 || true
        kill_pid "$pid" 30
        ;;
    *) kill_pid "$pid" 20 ;;
    esac
    if kill -0 "$pid" 2>/dev/null; then
        log "$kind: pid $pid would not die"
    fi
    cur_pid="" cur_kind=""
}

# ---------------------------------------------------------------------------------------------
# The load tool

# bench_run TARGET LABEL REP TOOL-ARGS...: one load-tool run, recorded in results/TARGET.jsonl.
bench_run() {
    local target=$1 label=$2 rep=$3
    shift 3
    local rc=0 relay_cpu=() before="" mech=none a prev=""
    for a in "$@"; do
        if [ "$prev" = --mech ]; then mech=$a; fi
        prev=$a
    done
    if [ "$target" = relay ] && [ -n "$cur_pid" ]; then before=$(cpu_s_of "$cur_pid"); fi
    log "$target $label rep $rep/$REPS: zorg-bench $*"
    timeout -k 10 "$RUN_TIMEOUT" "$BENCH" --threads "${run_threads:-$THREADS}" "$@" >"$work/last.out" 2>>"$work/logs/zorg-bench-$target.log" </dev/null || rc=$?
    if [ "$rc" = 124 ]; then log "$target $label: the load tool ran out of time (RUN_TIMEOUT=$RUN_TIMEOUT)"; fi
    if [ -n "$before" ]; then relay_cpu=(--relay-cpu "$before" "$(cpu_s_of "$cur_pid")" "$(rss_kib_of "$cur_pid")"); fi
    python3 "$here/record.py" --file "$results/$target.jsonl" --target "$target" --label "$label" --rep "$rep" --rc "$rc" \
        --set "mech=$mech" --set "direct_tls=$([ "$DIRECT_TLS" = 1 ] && echo true || echo false)" \
        --set "loadavg=$(cut -d' ' -f1 /proc/loadavg)" "${relay_cpu[@]}" <"$work/last.out" || true
}

# record_failure TARGET LABEL MESSAGE: an error line in results/TARGET.jsonl, for the table's notes.
record_failure() {
    python3 "$here/record.py" --file "$results/$1.jsonl" --target "$1" --label "$2" --rep 1 --rc 1 --error "$3" </dev/null || true
}

last_field() { # FILE FIELD: FIELD of the last line of FILE (JSON), or empty
    python3 -c 'import json,sys
lines=[l for l in open(sys.argv[1]) if l.strip()]
v=json.loads(lines[-1]).get(sys.argv[2]) if lines else None
print("" if v is None else v)' "$1" "$2" 2>/dev/null || true
}

# wait_quiet: until no client connection to the current server is left (at most 60 s), so that
# a run does not start, or the server is not stopped, while the last one's sessions still close.
wait_quiet() {
    local i n=0
    [ -n "$srv_port" ] || return 0
    if ! command -v ss >/dev/null; then
        sleep "$SETTLE"
        return 0
    fi
    for ((i = 0; i < 240; i++)); do
        n=$(ss -Htn state established "( sport = :$srv_port or sport = :$srv_dport )" 2>/dev/null | wc -l)
        [ "$n" -eq 0 ] && return 0
        sleep 0.25
    done
    log "$cur_kind: still $n client connections after 60 s"
}

server_alive() {
    if ! kill -0 "$cur_pid" 2>/dev/null; then
        log "$cur_kind (pid $cur_pid) died"
        record_failure "$cur_kind" crash "the server died during the measurements"
        return 1
    fi
}

probe() { # the server answers on both ports, registers, logs in with srv_mech, routes a message
    local name=$1 ok=0 args
    for args in "--port $srv_port" "--port $srv_dport --direct-tls"; do
        # shellcheck disable=SC2086
        if timeout 60 python3 "$here/xmpp_probe.py" $args --domain "$srv_domain" --user probe --password probe \
            --register --mech "$srv_mech" >"$work/probe.out" 2>&1; then
            log "$name probe ($args): $(cat "$work/probe.out")"
        else
            log "$name probe ($args) FAILED: $(cat "$work/probe.out")"
            ok=1
        fi
    done
    cat "$work/probe.out" >>"$work/logs/probe-$name.log"
    return $ok
}

set_common() { # [MECH]: the load tool's arguments for the running server, in the array "common"
    common=(--server "127.0.0.1:$([ "$DIRECT_TLS" = 1 ] && echo "$srv_dport" || echo "$srv_port")"
        --domain "$srv_domain" --ca "$srv_ca" --mech "${1:-$srv_mech}" --server-pid "$cur_pid")
    if [ "$DIRECT_TLS" = 1 ]; then common+=(--direct-tls); fi
}

restart_server() { # stop and start the current server again, on the same data
    local t=$cur_kind
    stop_server
    if ! "launch_$t"; then
        record_failure "$t" restart "did not start again"
        return 1
    fi
    set_common
    sleep "$SETTLE"
}

measure() { # the measurement set against the running server
    local t=$1 rep n common=()
    set_common

    if [ "$t" = zorg ] && [ "$zorg_offline_provision" = 1 ]; then
        log "zorg: accounts were created offline; skipping registration"
    else
        bench_run "$t" register 1 register "${common[@]}" --count "$ACCOUNTS" --in-flight 20
        local okc exists failed
        okc=$(last_field "$results/$t.jsonl" ok)
        exists=$(last_field "$results/$t.jsonl" exists)
        failed=$(last_field "$results/$t.jsonl" failed)
        if [ "$((${okc:-0} + ${exists:-0}))" -ne "$ACCOUNTS" ]; then
            log "$t: provisioning failed (ok=${okc:-?} exists=${exists:-?} failed=${failed:-?} of $ACCOUNTS); skipping its measurements"
            record_failure "$t" provisioning "only $((${okc:-0} + ${exists:-0})) of $ACCOUNTS accounts could be created; not measured"
            return 1
        fi
    fi
    sleep "$SETTLE"

    for ((rep = 1; rep <= REPS; rep++)); do
        server_alive || return 1
        run_threads=$LOGIN_THREADS bench_run "$t" login "$rep" login "${common[@]}" --users "$USERS_LOGIN" --in-flight "$IN_FLIGHT"
        wait_quiet
        sleep "$SETTLE"
    done
    # The TLS handshake alone, on the direct TLS port: what a login costs before any XMPP.
    for ((rep = 1; rep <= REPS; rep++)); do
        server_alive || return 1
        run_threads=$LOGIN_THREADS bench_run "$t" handshake "$rep" handshakes --server "127.0.0.1:$srv_dport" \
            --domain "$srv_domain" --ca "$srv_ca" --count "$USERS_LOGIN" --in-flight "$IN_FLIGHT" --server-pid "$cur_pid"
        wait_quiet
        sleep "$SETTLE"
    done
    if [ "$LOGIN_PLAIN" = 1 ]; then
        for ((rep = 1; rep <= REPS; rep++)); do
            server_alive || return 1
            set_common PLAIN
            run_threads=$LOGIN_THREADS bench_run "$t" login-plain "$rep" login "${common[@]}" --users "$USERS_LOGIN" --in-flight "$IN_FLIGHT"
            set_common
            wait_quiet
            sleep "$SETTLE"
        done
    fi
    for ((rep = 1; rep <= REPS; rep++)); do
        server_alive || return 1
        bench_run "$t" closed "$rep" closed "${common[@]}" --pairs "$PAIRS" --window "$W" --duration "$DURATION"
        wait_quiet
        sleep "$SETTLE"
    done
    for ((rep = 1; rep <= REPS; rep++)); do
        server_alive || return 1
        bench_run "$t" open "$rep" open "${common[@]}" --pairs "$PAIRS" --rate "$RATE" --duration "$DURATION"
        wait_quiet
        sleep "$SETTLE"
    done
    for n in $USERS_IDLE; do
        for ((rep = 1; rep <= REPS; rep++)); do
            # A fresh process for each: memory freed by earlier runs would otherwise be reused and
            # the RSS growth per session would come out too small.
            if [ "$IDLE_FRESH" = 1 ]; then restart_server || return 1; fi
            server_alive || return 1
            bench_run "$t" "idle-$n" "$rep" idle "${common[@]}" --users "$n" --hold "$HOLD"
            wait_quiet
            sleep "$SETTLE"
        done
    done
}

# start_baseline MODE LOG LABEL: starts `zorg-bench MODE` (relay-server or tls-server) on the relay's
# port with the relay's certificate; records a failure under LABEL if it does not come up.
start_baseline() {
    local d="$work/relay"
    "$BENCH" --threads "$RELAY_THREADS" "$1" --listen "127.0.0.1:$relay_port" --cert "$d/cert.pem" --key "$d/key.pem" \
        >"$d/$2" 2>&1 </dev/null &
    cur_kind=relay cur_pid=$!
    disown "$cur_pid"
    srv_port=$relay_port srv_dport=$relay_port
    if ! wait_port "$relay_port" "$cur_pid" 30; then
        tail -n 20 "$d/$2" >&2
        record_failure relay "$3" "zorg-bench $1 did not start"
        stop_server
        return 1
    fi
}

run_relay() {
    local d="$work/relay" rep
    mkdir -p "$d"
    make_cert relay.test "$d"
    if ! ports_free "$relay_port"; then
        record_failure relay start "port $relay_port in use"
        return 1
    fi
    start_baseline relay-server server.log start || return 1
    for ((rep = 1; rep <= REPS; rep++)); do
        server_alive || break
        bench_run relay closed "$rep" relay --server "127.0.0.1:$relay_port" --ca "$d/cert.pem" \
            --pairs "$PAIRS" --window "$W" --duration "$DURATION"
        wait_quiet
        sleep "$SETTLE"
    done
    stop_server
    # The bare TLS server: full handshakes and nothing else (recorded under the relay's name).
    start_baseline tls-server tls-server.log handshake || return 1
    for ((rep = 1; rep <= REPS; rep++)); do
        server_alive || break
        run_threads=$LOGIN_THREADS bench_run relay handshake "$rep" handshakes --server "127.0.0.1:$relay_port" \
            --domain relay.test --ca "$d/cert.pem" --count "$USERS_LOGIN" --in-flight "$IN_FLIGHT" --server-pid "$cur_pid"
        wait_quiet
        sleep "$SETTLE"
    done
    stop_server
}

# ---------------------------------------------------------------------------------------------
# Metadata for the table

write_meta() {
    local zv pv ev erl lua bv rev
    zv=$("$ZORG" --version 2>/dev/null | head -n1 | awk '{ print $NF }' || true)
    rev=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || true)
    if [ -n "$rev" ] && [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then rev="$rev+changes"; fi
    [ -n "$rev" ] && zv="$zv (commit $rev)"
    pv=$(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo "?")
    lua=$(dpkg-query -W -f='${Version}' lua5.4 2>/dev/null || true)
    ev=$(dpkg-query -W -f='${Version}' ejabberd 2>/dev/null || echo "?")
    erl=$(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null | sed 's/^[0-9]*://' || true)
    bv=$("$BENCH" --version 2>/dev/null | head -n1 | awk '{ print $NF }' || true)
    ZV="${zv:-?}" PV="$pv (Debian package; Lua ${lua:-?}, epoll)" EV="$ev (Debian package; Erlang/OTP ${erl:-?})" BV="${bv:-?}" \
        CMD="$(env | grep -E '^(REPS|DURATION|PAIRS|W|RATE|USERS_LOGIN|IN_FLIGHT|USERS_IDLE|HOLD|ACCOUNTS|THREADS|LOGIN_THREADS|RELAY_THREADS|DIRECT_TLS|MECH[A-Z_]*)=' |
            sed "s/=\(.*\)/='\1'/" | paste -sd' ' -) $argv_text" \
        python3 - "$results/meta.json" <<EOF
import json, os, platform, sys, datetime
def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
def mem():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return "%.1f GiB RAM" % (int(line.split()[1]) / 1048576)
    except OSError:
        pass
    return "?"
def osname():
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "?"
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "machine": {"kernel": platform.release(), "nproc": os.cpu_count(), "cpu_model": cpu(), "mem_total": mem(), "os": osname()},
    "versions": {"zorg": os.environ["ZV"], "prosody": os.environ["PV"], "ejabberd": os.environ["EV"], "zorg_bench": os.environ["BV"]},
    "mech": {"zorg": "$MECH_ZORG", "prosody": "$MECH_PROSODY", "ejabberd": "$MECH_EJABBERD"},
    "params": {"reps": $REPS, "duration": $DURATION, "pairs": $PAIRS, "window": $W, "rate": $RATE,
               "users_login": $USERS_LOGIN, "in_flight": $IN_FLIGHT, "users_idle": [int(x) for x in "$USERS_IDLE".split()],
               "hold": $HOLD, "accounts": $ACCOUNTS, "threads": $THREADS, "login_threads": $LOGIN_THREADS, "relay_threads": $RELAY_THREADS, "direct_tls": $DIRECT_TLS == 1, "login_plain": $LOGIN_PLAIN == 1,
               "servers": "$servers".split(), "relay": $do_relay == 1},
    "command": os.environ["CMD"].strip(),
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
}

# ---------------------------------------------------------------------------------------------
# Main

[ "$(id -u)" = 0 ] || die "run as root (ejabberdctl and the package installation need it)"
[ -x "$ZORG" ] || die "no zorg binary at $ZORG (cargo build --release -p zorg)"
if [ "$check_only" = 0 ] && [ ! -x "$BENCH" ]; then
    die "no load tool at $BENCH (cargo build --release -p zorg-bench)"
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds=$(ulimit -n)
[ "$fds" = unlimited ] || [ "$fds" -gt "$((ACCOUNTS + 1000))" ] || log "WARNING: only $fds file descriptors (ulimit -n): idle runs may fail"

log "work directory $work"
ensure_packages
for p in prosody ejabberdctl openssl python3; do command -v "$p" >/dev/null || die "$p not found"; done
write_meta

failed_servers=""
for t in $servers; do
    log "==== $t ===="
    machine_busy_note
    srv_domain="" srv_port="" srv_dport="" srv_ca="" srv_mech=""
    srv_logs=()
    if ! "start_$t"; then
        log "$t did not start"
        record_failure "$t" start "did not start (see its log)"
        stop_server
        failed_servers+=" $t"
        continue
    fi
    log "$t is up: pid $cur_pid ($(cat "/proc/$cur_pid/comm" 2>/dev/null)), $srv_domain on 127.0.0.1:$srv_port (STARTTLS) and :$srv_dport (direct TLS), SASL $srv_mech"
    if ! probe "$t"; then
        record_failure "$t" probe "failed the probe: $(tail -c 300 "$work/probe.out" | tr '"' "'")"
        failed_servers+=" $t"
        stop_server
        continue
    fi
    if [ "$check_only" = 0 ]; then
        measure "$t" || failed_servers+=" $t"
    fi
    stop_server
    for f in "${srv_logs[@]}"; do
        [ -f "$f" ] && cp "$f" "$work/logs/$t-$(basename "$f")"
    done
    if [ -s "$work/logs/$t-$(basename "${srv_logs[0]}")" ]; then
        log "$t: $(wc -l <"$work/logs/$t-$(basename "${srv_logs[0]}")") lines in its log $work/logs/$t-$(basename "${srv_logs[0]}")"
    fi
done

if [ "$check_only" = 0 ] && [ "$do_relay" = 1 ]; then
    log "==== bare TLS relay ===="
    machine_busy_note
    run_relay || failed_servers+=" relay"
fi

if [ "$check_only" = 1 ]; then
    [ -z "$failed_servers" ] || die "check failed for:$failed_servers"
    log "check passed: $servers"
    exit 0
fi

mkdir -p "$(dirname "$out")"
python3 "$here/table.py" --results "$results" --out "$out"
log "raw results: $raw_dir"
[ -z "$failed_servers" ] || die "some runs failed:$failed_servers (see the table's notes and $work/logs)"
exit 0
}

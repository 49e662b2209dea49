#!/usr/bin/env bash
# Federation interop: Zorg against Prosody and ejabberd (the Debian packages), server to server,
# with certificates from `zorg ca` and certificate authentication only (SASL EXTERNAL, XEP-0178;
# no dialback anywhere).
#
# Usage: bash interop/federation.sh [ZORG_BINARY] [PYTEST_ARGS...]
#   ZORG_BINARY defaults to target/debug/zorg in this repository; this script builds nothing.
#   Runs as root (it edits /etc/hosts and starts ejabberd as the ejabberd user) on Debian
#   bookworm with prosody (0.12) and ejabberd (23.01) installed and their own daemons stopped
#   (.ci/run installs them), and a python with slixmpp and pytest: PYTHON, default
#   target/interop-venv/bin/python, else python3.
#   KEEP=1 keeps the temporary directory (CAs, configs, data, every server's log).
#
# What it sets up, all on loopback, every server on the standard ports of its own address:
#   domain                          address    server   certificate from
#   zorg.interop.example            127.0.0.2  Zorg      the auditor's CA
#   prosody.interop.example         127.0.0.3  Prosody   the auditor's CA
#   ejabberd.interop.example        127.0.0.4  ejabberd  the auditor's CA
#   rogue.interop.example           127.0.0.5  Zorg      a rogue CA (a second zorg serve)
#   rogue-prosody.interop.example   127.0.0.6  Prosody   a rogue CA (a second VirtualHost)
#   rogue-ejabberd.interop.example  127.0.0.7  ejabberd  a rogue CA (a second host)
# Each server trusts only the auditor's CA (the rogue Zorg trusts both, so that the refusals it
# meets are the peers' own). The names go into /etc/hosts (lines marked "zorg-federation-interop",
# removed again at exit): every server, Zorg included, finds its peers through DNS alone (no
# [federation.hosts], no address of a peer in any config): the SRV lookups get NXDOMAIN from the
# system's name server and the A lookups are answered from the hosts file. Accounts everywhere:
# alice, bob, carol, with password "pw-<name>-interop".
# Then interop/test_federation.py (pytest + slixmpp) checks messages both ways between Zorg and
# each peer, that those links used SASL EXTERNAL, and that every link between a trusted server
# and a rogue one is refused, in both directions (what each peer does then is described in the
# test file's docstring). Everything started here is stopped on exit; on failure the tail of
# each server's log is printed. At the end it prints what each server logged about
# authenticating and refusing links. About 30 s on 2 cores, most of it ejabberd's start.
#
# Tested with Debian bookworm's prosody 0.12.3-1+deb12u1 (Lua 5.4, libunbound) and ejabberd
# 23.01-1 (Erlang/OTP 25), and slixmpp 1.17.0. Peer configuration that matters: Prosody with
# s2s_secure_auth, s2s_require_encryption, mod_dialback disabled, the auditor's CA as ssl.cafile,
# and `unbound = { hoststxt = ... }` (its libunbound resolver ignores the hosts file otherwise);
# ejabberd with s2s_use_starttls: required, s2s_cafile, no mod_s2s_dialback, and an inetrc that
# reads the hosts file. Certificates without XmppAddr (ejabberd 23.01 crashes on one).
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
zorg=${1:-$repo/target/debug/zorg}
shift || true
log() { printf '[%s] federation: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "$*"
    exit 1
}
[ -x "$zorg" ] || die "no zorg binary at $zorg; build it first (cargo build)"
zorg=$(realpath "$zorg")
python=${PYTHON:-$repo/target/interop-venv/bin/python}
[ -x "$python" ] || python=python3
[ "$(id -u)" = 0 ] || die "run as root: it edits /etc/hosts and runs ejabberd as the ejabberd user"
for p in prosody prosodyctl ejabberdctl setpriv; do
    command -v "$p" >/dev/null || die "$p not found (apt-get install prosody ejabberd)"
done

marker="# zorg-federation-interop"
# Domain, address and CA of every server (see the table above).
declare -A addr=(
    [zorg]=127.0.0.2 [prosody]=127.0.0.3 [ejabberd]=127.0.0.4
    [rogue]=127.0.0.5 [rogue-prosody]=127.0.0.6 [rogue-ejabberd]=127.0.0.7
)
dom() { echo "$1.interop.example"; }
ca_of() { case $1 in rogue*) echo rogue ;; *) echo auditor ;; esac; }
# ejabberd's Erlang distribution port: a fixed port means no epmd daemon (as in bench/compare.sh).
ejabberd_dist_port=${EJABBERD_DIST_PORT:-25471}

# World-traversable: ejabberd runs as the ejabberd user and must reach its own subdirectory.
work=$(mktemp -d "${TMPDIR:-/tmp}/zorg-federation.XXXXXX")
chmod 755 "$work"
declare -A pid=()
ejabberd_up=0
hosts_edited=0

# The logs printed on failure, by server.
server_logs() {
    echo "$work/zorg/server.log" "$work/rogue/server.log" "$work/prosody/prosody.log" \
        "$work/ejabberd/logs/ejabberd.log" "$work/ejabberd/logs/error.log"
}

kill_pid() { # PID SECONDS: SIGTERM, wait at most SECONDS, then SIGKILL
    local p=$1 i
    kill -0 "$p" 2>/dev/null || return 0
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$p" 2>/dev/null || return 0
        sleep 0.1
    done
    log "pid $p still alive after $2 s: SIGKILL"
    kill -KILL "$p" 2>/dev/null || true
}

# The hosts file is often a bind mount (containers): rewrite it in place, never replace it.
hosts_without_ours() {
    grep -vF "$marker" /etc/hosts >"$work/hosts" || true
    cat "$work/hosts" >/etc/hosts
}

# ejabberdctl as the ejabberd user, with this directory's config (as bench/compare.sh does:
# setpriv rather than su, whose PAM session would lower the open-files limit).
ejabberdctl_cmd() {
    local d="$work/ejabberd"
    timeout "${EJ_TIMEOUT:-60}" env HOME="$d" setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
        ejabberdctl --config-dir "$d" --config "$d/ejabberd.yml" --ctl-config "$d/ejabberdctl.cfg" \
        --logs "$d/logs" --spool "$d/spool" "$@"
}

cleanup() {
    local rc=$? name f
    set +e
    trap - EXIT INT TERM
    if [ "$ejabberd_up" = 1 ]; then
        EJ_TIMEOUT=30 ejabberdctl_cmd stop >>"$work/ejabberd/start.log" 2>&1
    fi
    for name in "${!pid[@]}"; do
        kill_pid "${pid[$name]}" 10
        wait "${pid[$name]}" 2>/dev/null
    done
    if [ "$hosts_edited" = 1 ]; then hosts_without_ours; fi
    if [ "$rc" -ne 0 ]; then
        for f in $(server_logs); do
            [ -s "$f" ] || continue
            echo "---- last 40 lines of $f ----" >&2
            tail -n 40 "$f" >&2
        done
    fi
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_listen PID SECONDS ADDR:PORT...: until every address accepts connections; fails when
# PID exits (0: no process to watch) or time runs out.
wait_listen() {
    local p=$1 secs=$2 i a ok
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        if [ "$p" != 0 ] && ! kill -0 "$p" 2>/dev/null; then
            log "process $p exited before listening on $*"
            return 1
        fi
        ok=1
        for a in "$@"; do
            timeout 1 bash -c 'exec 3<>"/dev/tcp/${0%:*}/${0##*:}"' "$a" 2>/dev/null || { ok=0 && break; }
        done
        [ "$ok" = 1 ] && return 0
        sleep 0.2
    done
    log "not listening on $* after $secs s"
    return 1
}

started=$SECONDS
log "work directory $work; zorg $("$zorg" --version | awk '{ print $NF }')," \
    "prosody $(dpkg-query -W -f='${Version}' prosody), ejabberd $(dpkg-query -W -f='${Version}' ejabberd)"
for name in "${!addr[@]}"; do
    for port in 5222 5269; do
        if timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${addr[$name]}" "$port" 2>/dev/null; then
            die "${addr[$name]}:$port is taken already (ss -ltnp): stop whatever listens there" \
                "(the prosody and ejabberd packages' own daemons must not run)"
        fi
    done
done

# --- certificates ------------------------------------------------------------------------------
"$zorg" ca init --dir "$work/ca/auditor" --name "Interop Auditor CA" >/dev/null
"$zorg" ca init --dir "$work/ca/rogue" --name "Interop Rogue CA" >/dev/null
for name in "${!addr[@]}"; do
    "$zorg" ca issue --dir "$work/ca/$(ca_of "$name")" --domain "$(dom "$name")" --out "$work/certs" >/dev/null
done
auditor_ca=$work/ca/auditor/ca.crt
rogue_ca=$work/ca/rogue/ca.crt
crt() { echo "$work/certs/$(dom "$1").crt"; }
key() { echo "$work/certs/$(dom "$1").key"; }

# --- the hosts file --------------------------------------------------------------------------
hosts_edited=1
hosts_without_ours
for name in zorg prosody ejabberd rogue rogue-prosody rogue-ejabberd; do
    printf '%s\t%s\t%s\n' "${addr[$name]}" "$(dom "$name")" "$marker" >>/etc/hosts
done

# --- Zorg and the rogue Zorg -----------------------------------------------------------------
# zorg_config NAME ANCHORS...: a config for Zorg instance NAME, trusting ANCHORS; it finds its
# peers through DNS like the others (SRV, then the hosts file).
zorg_config() {
    local name=$1 d="$work/$1" a anchors=""
    shift
    for a in "$@"; do anchors+="\"$a\", "; done
    mkdir -p "$d"
    cat >"$d/zorg.toml" <<EOF
# Zorg $(dom "$name") for interop/federation.sh
data_dir = "data"

[[domain]]
name = "$(dom "$name")"
certificate = "$(crt "$name")"
key = "$(key "$name")"

[c2s]
listen = ["${addr[$name]}:5222"]
direct_tls = []

[s2s]
listen = ["${addr[$name]}:5269"]
direct_tls = []

[federation]
enabled = true
trust_anchors = [${anchors%, }]
dialback = false
connect_timeout = "15s"

[log]
level = "info,zorg_server=debug"
EOF
    for a in alice bob carol; do
        printf 'pw-%s-interop\n' "$a" |
            "$zorg" user add "$a@$(dom "$name")" --config "$d/zorg.toml" --password-stdin >/dev/null
    done
}

start_zorg() {
    "$zorg" serve --config "$work/$1/zorg.toml" >"$work/$1/server.out" 2>"$work/$1/server.log" </dev/null &
    pid[$1]=$!
}

# --- Prosody -----------------------------------------------------------------------------------
prosody_config() {
    local d="$work/prosody"
    mkdir -p "$d/data"
    cat >"$d/prosody.cfg.lua" <<EOF
-- Prosody for interop/federation.sh: prosody.interop.example (auditor's certificate) and
-- rogue-prosody.interop.example (rogue certificate), each on its own address.
run_as_root = true -- it would switch to the prosody user otherwise
pidfile = "$d/prosody.pid"
data_path = "$d/data"
plugin_paths = {}
interfaces = { "${addr[prosody]}", "${addr[rogue-prosody]}" }
local_interfaces = { "${addr[prosody]}", "${addr[rogue-prosody]}" }
use_ipv6 = false
c2s_ports = { 5222 }
c2s_direct_tls_ports = {}
s2s_ports = { 5269 }
http_ports = {}
https_ports = {}
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping" }
-- Certificate authentication only: no dialback, TLS required, a valid certificate required.
modules_disabled = { "dialback" }
s2s_require_encryption = true
s2s_secure_auth = true
c2s_require_encryption = true
authentication = "internal_hashed"
-- Peers are found through DNS; libunbound reads the hosts file only when asked to.
unbound = { hoststxt = "/etc/hosts" }
ssl = { cafile = "$auditor_ca" }
log = { debug = "$d/prosody.log" }

VirtualHost "$(dom prosody)"
	ssl = { certificate = "$(crt prosody)"; key = "$(key prosody)" }

VirtualHost "$(dom rogue-prosody)"
	ssl = { certificate = "$(crt rogue-prosody)"; key = "$(key rogue-prosody)" }
EOF
    for host in prosody rogue-prosody; do
        for a in alice bob carol; do
            timeout 30 prosodyctl --config "$d/prosody.cfg.lua" register "$a" "$(dom "$host")" "pw-$a-interop" \
                >>"$d/register.log" 2>&1 || die "prosodyctl register $a@$(dom "$host") failed: $(tail -n 5 "$d/register.log")"
        done
    done
}

start_prosody() {
    local d="$work/prosody"
    prosody --config "$d/prosody.cfg.lua" -F >"$d/stdout.log" 2>&1 </dev/null &
    pid[prosody]=$!
}

# --- ejabberd ----------------------------------------------------------------------------------
ejabberd_config() {
    local d="$work/ejabberd" host ip
    mkdir -p "$d/logs" "$d/spool"
    # ejabberd wants the certificate chain and its key in one file.
    for host in ejabberd rogue-ejabberd; do
        cat "$(crt "$host")" "$(key "$host")" >"$d/$host.pem"
    done
    cp "$auditor_ca" "$d/auditor-ca.crt"
    # Erlang reads inetrc from the config directory: the hosts file first, then the system's.
    echo '{lookup,["file","native"]}.' >"$d/inetrc"
    {
        cat <<EOF
# ejabberd for interop/federation.sh: ejabberd.interop.example (auditor's certificate) and
# rogue-ejabberd.interop.example (rogue certificate), each on its own address.
hosts:
  - $(dom ejabberd)
  - $(dom rogue-ejabberd)
loglevel: info
log_rotate_count: 0
log_rotate_size: infinity
certfiles:
  - "$d/ejabberd.pem"
  - "$d/rogue-ejabberd.pem"
# Certificate authentication only: STARTTLS required, peers' certificates checked against the
# auditor's CA, and no mod_s2s_dialback below.
s2s_use_starttls: required
s2s_cafile: "$d/auditor-ca.crt"
outgoing_s2s_families:
  - ipv4
s2s_dns_timeout: 5
s2s_dns_retries: 1
auth_method: internal
auth_password_format: scram
listen:
EOF
        for ip in "${addr[ejabberd]}" "${addr[rogue-ejabberd]}"; do
            cat <<EOF
  -
    port: 5222
    ip: "$ip"
    module: ejabberd_c2s
    starttls_required: true
  -
    port: 5269
    ip: "$ip"
    module: ejabberd_s2s_in
EOF
        done
        cat <<EOF
acl:
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  c2s:
    allow: all
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
EOF
    } >"$d/ejabberd.yml"
    cat >"$d/ejabberdctl.cfg" <<EOF
ERLANG_NODE=zorg-federation@localhost
INET_DIST_INTERFACE=127.0.0.1
ERL_DIST_PORT=$ejabberd_dist_port
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
EJABBERD_PID_PATH=$d/ejabberd.pid
EJABBERD_BYPASS_WARNINGS=true
EOF
    chown -R ejabberd:ejabberd "$d"
    chmod 600 "$d"/*.pem
}

start_ejabberd() {
    local d="$work/ejabberd" i
    ejabberdctl_cmd start >>"$d/start.log" 2>&1 || die "ejabberdctl start failed: $(cat "$d/start.log")"
    ejabberd_up=1
    for ((i = 0; i < 300; i++)); do
        [ -s "$d/ejabberd.pid" ] && break
        sleep 0.2
    done
    [ -s "$d/ejabberd.pid" ] || die "ejabberd wrote no pid file within 60 s"
    pid[ejabberd]=$(cat "$d/ejabberd.pid")
}

ejabberd_accounts() {
    local host a
    for host in ejabberd rogue-ejabberd; do
        for a in alice bob carol; do
            ejabberdctl_cmd register "$a" "$(dom "$host")" "pw-$a-interop" >>"$work/ejabberd/start.log" 2>&1 ||
                die "ejabberdctl register $a@$(dom "$host") failed: $(tail -n 5 "$work/ejabberd/start.log")"
        done
    done
}

# --- start everything --------------------------------------------------------------------------
# ejabberd first: it takes longest to start, and the others are set up meanwhile.
ejabberd_config
start_ejabberd
zorg_config zorg "$auditor_ca"
zorg_config rogue "$auditor_ca" "$rogue_ca"
prosody_config
start_zorg zorg
start_zorg rogue
start_prosody
wait_listen "${pid[zorg]}" 30 "${addr[zorg]}:5222" "${addr[zorg]}:5269" || die "zorg did not start"
wait_listen "${pid[rogue]}" 30 "${addr[rogue]}:5222" "${addr[rogue]}:5269" || die "the rogue zorg did not start"
wait_listen "${pid[prosody]}" 30 "${addr[prosody]}:5222" "${addr[prosody]}:5269" \
    "${addr[rogue-prosody]}:5222" "${addr[rogue-prosody]}:5269" || die "prosody did not start"
wait_listen "${pid[ejabberd]}" 90 "${addr[ejabberd]}:5222" "${addr[ejabberd]}:5269" \
    "${addr[rogue-ejabberd]}:5222" "${addr[rogue-ejabberd]}:5269" || die "ejabberd did not start"
ejabberd_accounts
log "all six servers are up after $((SECONDS - started)) s"

# --- the tests ---------------------------------------------------------------------------------
# One JSON object: for each server its domain, address, c2s port, the CA its clients trust and
# its log.
servers_json() {
    local name sep="" logf
    printf '{'
    for name in "${!addr[@]}"; do
        case $name in
        zorg | rogue) logf="$work/$name/server.log" ;;
        *prosody) logf="$work/prosody/prosody.log" ;;
        *ejabberd) logf="$work/ejabberd/logs/ejabberd.log" ;;
        esac
        printf '%s"%s": {"domain": "%s", "host": "%s", "port": 5222, "ca": "%s", "log": "%s"}' \
            "$sep" "$name" "$(dom "$name")" "${addr[$name]}" "$work/ca/$(ca_of "$name")/ca.crt" "$logf"
        sep=", "
    done
    printf '}'
}
export ZORG_FED_SERVERS
ZORG_FED_SERVERS=$(servers_json)
export ZORG_FED_PROSODY_VERSION ZORG_FED_EJABBERD_VERSION
ZORG_FED_PROSODY_VERSION=$(dpkg-query -W -f='${Version}' prosody)
ZORG_FED_EJABBERD_VERSION=$(dpkg-query -W -f='${Version}' ejabberd)

status=0
(cd "$here" && "$python" -m pytest -v -p no:cacheprovider test_federation.py "$@") || status=$?
# What each server logged about authenticating and refusing links, for the CI log.
log "what the servers logged about s2s authentication:"
{
    grep -hE 's2s link (accepted|refused)' "$work/zorg/server.log" | sed 's/^/  zorg: /'
    grep -hE 's2s link (accepted|refused)' "$work/rogue/server.log" | sed 's/^/  rogue zorg: /'
    grep -hE 'SASL EXTERNAL (identity|with)|Forbidding|No SASL EXTERNAL|closed by remote with error' \
        "$work/prosody/prosody.log" | sed 's/^/  prosody: /'
    grep -hE 'EXTERNAL authentication' "$work/ejabberd/logs/ejabberd.log" | sed 's/^/  ejabberd: /'
} | head -n 60 >&2 || true
log "done in $((SECONDS - started)) s (pytest exit status $status)"
exit "$status"

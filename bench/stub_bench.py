#!/usr/bin/env python3
"""A stand-in for target/release/zorg-bench, for testing compare.sh and table.py only.

It accepts the load tool's command line, does not measure anything, and prints one JSON line
with made-up numbers of the right shape (relay-server listens on its port until killed, and
register really creates the accounts through bench/xmpp_probe.py when STUB_REGISTER=1).

  BENCH=bench/stub_bench.py bash bench/compare.sh --out /tmp/stub.md
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("mode")
    ap.add_argument("--server")
    ap.add_argument("--domain", default="localhost")
    ap.add_argument("--direct-tls", action="store_true")
    ap.add_argument("--ca")
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--mech", default="SCRAM-SHA-256")
    ap.add_argument("--prefix", default="bench")
    ap.add_argument("--password", default="bench")
    ap.add_argument("--in-flight", type=int, default=50)
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--count", type=int)
    ap.add_argument("--users", type=int)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=30)
    ap.add_argument("--hold", type=int, default=10)
    ap.add_argument("--listen")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    rnd = random.Random()
    nap = float(os.environ.get("STUB_SLEEP", "0.2"))

    if a.mode == "relay-server":
        host, port = a.listen.rsplit(":", 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(128)
        print("relay listening on %s" % a.listen, file=sys.stderr)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        deadline = time.monotonic() + 3600
        s.settimeout(1)
        while time.monotonic() < deadline:
            try:
                c, _ = s.accept()
                c.close()
            except socket.timeout:
                pass
        return 0

    time.sleep(nap)
    lat = lambda base: {"p50": int(base), "p90": int(base * 1.6), "p99": int(base * 3), "max": int(base * 9), "count": 1000}
    proc = {}
    if a.server_pid:
        proc = {"server_pid": a.server_pid, "server_rss_kib_before": 20000, "server_rss_kib_after": 20000 + rnd.randint(1, 9) * 1000,
                "server_cpu_s": round(rnd.uniform(0.5, 20), 3)}
    if a.mode == "register":
        ok, exists, failed = a.count, 0, 0
        if os.environ.get("STUB_REGISTER") == "1":
            ok = exists = 0
            port = int(a.server.rsplit(":", 1)[1])
            for i in range(a.count):
                r = subprocess.run([sys.executable, os.path.join(here, "xmpp_probe.py"), "--port", str(port), "--domain", a.domain,
                                    "--user", "%s%d" % (a.prefix, i), "--password", a.password, "--register",
                                    "--mech", a.mech] + (["--direct-tls"] if a.direct_tls else []),
                                   capture_output=True, text=True, timeout=60)
                v = json.loads(r.stdout)
                if v.get("register") == "ok":
                    ok += 1
                elif v.get("register") == "exists":
                    exists += 1
                else:
                    failed += 1
        out = {"mode": "register", "ok": ok, "exists": exists, "failed": failed, "errors": {}, "duration_s": nap}
    elif a.mode == "login":
        out = {"mode": "login", "users": a.users, "in_flight": a.in_flight, "logins_ok": a.users, "logins_failed": 0,
               "login_rate": round(rnd.uniform(100, 3000), 1), "login_p99_ms": round(rnd.uniform(5, 80), 3),
               "errors": {}, "duration_s": nap, "server_cpu_ms_per_login": round(rnd.uniform(0.2, 8), 3), **proc}
    elif a.mode in ("closed", "open", "relay"):
        rate = a.rate if a.mode == "open" else rnd.uniform(2000, 90000)
        out = {"mode": a.mode, "pairs": a.pairs, "duration_s": float(a.duration), "sent": int(rate * a.duration),
               "delivered": int(rate * a.duration), "lost": 0, "msgs_per_sec": round(rate),
               "latency_us": lat(rnd.uniform(100, 5000)), "errors": {}, **proc}
        if proc:
            out["server_cpu_us_per_msg"] = round(rnd.uniform(5, 500), 1)
    elif a.mode == "idle":
        out = {"mode": "idle", "users": a.users, "sessions": a.users, "login_s": nap, "hold_s": float(a.hold), "errors": {}, **proc}
        if proc:
            out["kib_per_session"] = round(rnd.uniform(8, 70), 1)
    else:
        print("stub: unknown mode %s" % a.mode, file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

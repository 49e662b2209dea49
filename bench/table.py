#!/usr/bin/env python3
"""Turns the JSON Lines results of bench/compare.sh into a Markdown table of medians.

Reads DIR/*.jsonl (one file per target: zorg, prosody, ejabberd, relay; one labelled load-tool
result per line, see bench/record.py) and DIR/meta.json (machine, versions, parameters), prints
the table on stdout and writes it to --out. Standard library only.

Each cell is the median over the repetitions that ran; "(2/3)" after it says only 2 of 3 did.
The ratio columns are Zorg's median divided by the peer's: above 1 is better for Zorg where
higher is better (↑), below 1 is better where lower is better (↓).

Usage: python3 bench/table.py --results DIR [--out bench/results-latest.md]
"""

import argparse
import glob
import json
import os
import statistics
import sys

SERVERS = ["zorg", "prosody", "ejabberd"]
PEERS = ["prosody", "ejabberd"]
NAMES = {"zorg": "Zorg", "prosody": "Prosody", "ejabberd": "ejabberd", "relay": "bare TLS relay"}

# (field path, what it is, "up" if higher is better else "down", scale[, with ratios])
LOGIN_METRICS = [
    ("login_rate", "logins/s", "up", 1),
    ("login_p99_ms", "login p99 (ms)", "down", 1),
    ("server_cpu_ms_per_login", "server CPU per login (ms)", "down", 1),
    ("logins_failed", "failed logins", "down", 1, False),
]
LOOP_METRICS = [
    ("msgs_per_sec", "delivered msgs/s", "up", 1),
    ("latency_us.p50", "latency p50 (ms)", "down", 0.001),
    ("latency_us.p90", "latency p90 (ms)", "down", 0.001),
    ("latency_us.p99", "latency p99 (ms)", "down", 0.001),
    ("latency_us.max", "latency max (ms)", "down", 0.001),
    ("server_cpu_us_per_msg", "server CPU per msg (µs)", "down", 1),
    ("lost", "lost msgs", "down", 1, False),
]
HANDSHAKE_METRICS = [
    ("handshake_rate", "TLS handshakes/s", "up", 1),
    ("handshake_p99_ms", "handshake p99 (ms)", "down", 1),
    ("server_cpu_ms_per_handshake", "server CPU per handshake (ms)", "down", 1),
    ("failed", "failed handshakes", "down", 1, False),
]
IDLE_METRICS = [
    ("kib_per_session", "RSS per session (KiB)", "down", 1),
    ("server_rss_kib_after", "server RSS with sessions (MiB)", "down", 1 / 1024),
    ("login_s", "time to log them in (s)", "down", 1),
    ("sessions", "sessions held", "up", 1, False),
]


def get(rec, path):
    v = rec
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def fmt(x):
    if x is None:
        return "–"
    if x == 0:
        return "0"
    ax = abs(x)
    if float(x).is_integer() and ax < 1e15:
        return "{:,}".format(int(x))
    if ax >= 100:
        return "{:,.0f}".format(x)
    if ax >= 10:
        return "{:.1f}".format(x)
    if ax >= 1:
        return "{:.2f}".format(x)
    return "{:.3g}".format(x)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    r = a / b
    return ("{:.2f}×" if r < 10 else "{:.1f}×").format(r)


def load(results_dir):
    recs = {}
    for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    print("table: %s:%d: not JSON, skipped" % (path, n), file=sys.stderr)
                    continue
                recs.setdefault((r.get("target"), r.get("label")), []).append(r)
    meta = {}
    mpath = os.path.join(results_dir, "meta.json")
    if os.path.exists(mpath):
        with open(mpath, encoding="utf-8") as f:
            meta = json.load(f)
    return recs, meta


def cell(recs, target, label, path, scale):
    """(median or None, text)"""
    runs = recs.get((target, label), [])
    good = [r for r in runs if "error" not in r]
    vals = [get(r, path) for r in good]
    vals = [v for v in vals if v is not None]
    if not vals:
        if runs and not good:
            return None, "failed"
        return None, "–"
    m = statistics.median(vals) * scale
    text = fmt(m)
    if len(vals) < len(runs):
        text += " (%d/%d)" % (len(vals), len(runs))
    return m, text


def section(out, recs, title, label, metrics, with_relay, relay_name=NAMES["relay"]):
    cols = [NAMES[s] for s in SERVERS]
    if with_relay:
        cols.append(relay_name)
    rcols = ["Zorg/" + NAMES[p] for p in PEERS] + (["Zorg/relay"] if with_relay else [])
    out.append("**%s**" % title)
    out.append("")
    out.append("| | " + " | ".join(cols + rcols) + " |")
    out.append("|---|" + "---:|" * (len(cols) + len(rcols)))
    for metric in metrics:
        path, what, better, scale = metric[:4]
        with_ratio = metric[4] if len(metric) > 4 else True
        vals, texts = {}, {}
        targets = SERVERS + (["relay"] if with_relay else [])
        for t in targets:
            vals[t], texts[t] = cell(recs, t, label, path, scale)
        if all(texts[t] == "–" for t in targets):
            continue
        row = [texts[t] for t in targets]
        row += [ratio(vals["zorg"], vals[p]) if with_ratio else "" for p in PEERS]
        if with_relay:
            row.append(ratio(vals["zorg"], vals["relay"]) if with_ratio else "")
        out.append("| %s %s | " % (what, "↑" if better == "up" else "↓") + " | ".join(row) + " |")
    out.append("")


def problems(recs):
    notes = []
    for (target, label), runs in sorted(recs.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        for r in runs:
            bits = []
            if "error" in r:
                bits.append("error: %s" % r["error"])
            for k in ("logins_failed", "lost", "failed"):
                if isinstance(r.get(k), (int, float)) and r[k] > 0:
                    bits.append("%s=%s" % (k, r[k]))
            if r.get("errors"):
                bits.append("errors %s" % json.dumps(r["errors"], sort_keys=True))
            if bits:
                notes.append("- %s, %s, rep %s: %s" % (NAMES.get(target, target), label, r.get("rep"), "; ".join(bits)))
    return notes


def runs_detail(recs):
    lines = []
    keys = {"login": "login_rate", "login-plain": "login_rate", "handshake": "handshake_rate",
            "closed": "msgs_per_sec", "open": "latency_us.p99"}
    for (target, label), runs in sorted(recs.items(), key=lambda kv: (str(kv[0][1]), str(kv[0][0]))):
        if label == "register":
            continue
        path = keys.get(label, "kib_per_session" if str(label).startswith("idle-") else None)
        if path is None:
            continue
        vals = ["failed" if "error" in r else fmt(get(r, path)) for r in sorted(runs, key=lambda r: r.get("rep", 0))]
        name = "bare TLS server" if (target, label) == ("relay", "handshake") else NAMES.get(target, target)
        lines.append("| %s | %s | %s | %s |" % (label, name, path, ", ".join(vals)))
    return lines


def render(recs, meta):
    p = meta.get("params", {})
    out = []
    out.append("## Results %s" % meta.get("date", ""))
    out.append("")
    m = meta.get("machine", {})
    if m:
        out.append("Machine: %s, %s cores, %s, Linux %s, %s." % (
            m.get("cpu_model", "?"), m.get("nproc", "?"), m.get("mem_total", "?"), m.get("kernel", "?"),
            m.get("os", "?")))
    v = meta.get("versions", {})
    if v:
        out.append("Versions: %s." % "; ".join("%s %s" % (NAMES.get(k, k), v[k]) for k in ["zorg", "prosody", "ejabberd", "zorg_bench"] if k in v))
    mech = meta.get("mech", {})
    if p:
        out.append("Parameters: repetitions %s (median shown); login %s users, %s in flight; closed loop %s pairs, "
                   "window %s, %s s; open loop %s pairs at %s msgs/s, %s s; idle %s sessions held %s s; %s; "
                   "SASL %s; load generator threads: %s (logins and handshakes: %s)." % (
                       p.get("reps"), p.get("users_login"), p.get("in_flight"), p.get("pairs"), p.get("window"),
                       p.get("duration"), p.get("pairs"), p.get("rate"), p.get("duration"),
                       " and ".join(str(x) for x in p.get("users_idle", [])), p.get("hold"),
                       "direct TLS" if p.get("direct_tls") else "STARTTLS",
                       ", ".join("%s %s" % (NAMES.get(k, k), mech[k]) for k in SERVERS if k in mech),
                       p.get("threads"), p.get("login_threads", p.get("threads"))))
    if meta.get("command"):
        out.append("")
        out.append("Command: `%s`" % meta["command"])
    out.append("")
    out.append("Ratios are Zorg's median over the peer's (↑: higher is better, ↓: lower is better).")
    out.append("")

    section(out, recs, "Login: %s users, %s in flight, full TLS handshake + SASL + bind each" % (
        p.get("users_login", "?"), p.get("in_flight", "?")), "login", LOGIN_METRICS, False)
    if any(lab == "handshake" for (_, lab) in recs):
        section(out, recs, "TLS handshake alone (direct TLS port, no XMPP): %s connections, %s in flight" % (
            p.get("users_login", "?"), p.get("in_flight", "?")), "handshake", HANDSHAKE_METRICS, True,
            "bare TLS server")
    if any(lab == "login-plain" for (_, lab) in recs):
        section(out, recs, "Login with SASL PLAIN: %s users, %s in flight" % (
            p.get("users_login", "?"), p.get("in_flight", "?")), "login-plain", LOGIN_METRICS, False)
    section(out, recs, "Closed loop: %s pairs, window %s, %s s" % (
        p.get("pairs", "?"), p.get("window", "?"), p.get("duration", "?")), "closed", LOOP_METRICS, True)
    section(out, recs, "Open loop: %s msgs/s over %s pairs, %s s" % (
        p.get("rate", "?"), p.get("pairs", "?"), p.get("duration", "?")), "open", LOOP_METRICS, False)
    idle_labels = sorted({lab for (_, lab) in recs if str(lab).startswith("idle-")},
                         key=lambda s: int(s.split("-", 1)[1]) if s.split("-", 1)[1].isdigit() else 0)
    for lab in idle_labels:
        section(out, recs, "Idle: %s TLS sessions, held %s s" % (lab.split("-", 1)[1], p.get("hold", "?")),
                lab, IDLE_METRICS, False)

    detail = runs_detail(recs)
    if detail:
        out.append("<details><summary>Every repetition</summary>")
        out.append("")
        out.append("| measurement | server | field | repetitions |")
        out.append("|---|---|---|---|")
        out.extend(detail)
        out.append("")
        out.append("</details>")
        out.append("")
    notes = problems(recs)
    if notes:
        out.append("Problems seen in the runs:")
        out.append("")
        out.extend(notes)
        out.append("")
    return "\n".join(out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", required=True, help="directory with *.jsonl and meta.json")
    ap.add_argument("--out", default=os.path.join(here, "results-latest.md"), help="Markdown file to write")
    args = ap.parse_args()
    recs, meta = load(args.results)
    if not recs:
        print("table: no results in %s" % args.results, file=sys.stderr)
        return 1
    md = render(recs, meta)
    print(md)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(md + "\n")
    print("table: wrote %s" % args.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

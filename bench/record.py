#!/usr/bin/env python3
"""Append one load-tool result to a JSON Lines file, labelled (standard library only).

Reads the load tool's standard output on stdin, takes its last line that parses as a JSON
object, adds the labels given on the command line (target server, measurement, repetition,
SASL mechanism…) and appends it as one line to --file. When the tool printed no JSON (it
crashed, or `timeout` killed it), a line with "error" is appended instead, so that the table
shows the failure instead of silently having fewer repetitions. Prints a one-line summary on
stderr for the person watching the run.

Usage: zorg-bench … | python3 bench/record.py --file results/zorg.jsonl --target zorg \
           --label closed --rep 1 --rc "$rc" [--set key=value …] [--relay-cpu B A]
"""

import argparse
import json
import sys


def parse_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def summary(v):
    mode = v.get("mode", "?")
    if "error" in v:
        return "ERROR: %s" % v["error"]
    parts = []
    if mode == "register":
        parts.append("ok=%s exists=%s failed=%s" % (v.get("ok"), v.get("exists"), v.get("failed")))
    if "login_rate" in v:
        parts.append("%s logins/s p99=%s ms failed=%s" % (v.get("login_rate"), v.get("login_p99_ms"), v.get("logins_failed")))
    if "handshake_rate" in v:
        parts.append("%s handshakes/s p99=%s ms failed=%s" % (v.get("handshake_rate"), v.get("handshake_p99_ms"), v.get("failed")))
    if "msgs_per_sec" in v:
        lat = v.get("latency_us") or {}
        parts.append("%s msgs/s p50=%s p99=%s us lost=%s" % (v.get("msgs_per_sec"), lat.get("p50"), lat.get("p99"), v.get("lost")))
    if "server_cpu_us_per_msg" in v:
        parts.append("cpu=%s us/msg" % v["server_cpu_us_per_msg"])
    if "kib_per_session" in v:
        parts.append("%s KiB/session (%s sessions)" % (v.get("kib_per_session"), v.get("sessions")))
    if v.get("errors"):
        parts.append("errors=%s" % json.dumps(v["errors"], sort_keys=True))
    return " ".join(parts) or json.dumps(v)[:200]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", required=True)
    ap.add_argument("--target", required=True, help="zorg, prosody, ejabberd or relay")
    ap.add_argument("--label", required=True, help="login, closed, open, idle-1000, …")
    ap.add_argument("--rep", type=int, required=True)
    ap.add_argument("--rc", type=int, default=0, help="the load tool's exit status")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="another label; VALUE is parsed as JSON when it can be")
    ap.add_argument("--error", help="record this failure of the harness instead of reading stdin")
    ap.add_argument("--relay-cpu", nargs=3, type=float, metavar=("CPU_BEFORE_S", "CPU_AFTER_S", "RSS_KIB"),
                    help="the relay server's CPU seconds before and after the run and its RSS after, "
                         "sampled by compare.sh from /proc")
    args = ap.parse_args()

    result = None
    raw = "" if args.error else sys.stdin.read()
    for line in reversed(raw.splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            result = v
            break
    if args.error:
        result = {"error": args.error}
    elif result is None:
        result = {"error": "no JSON output from the load tool (exit status %d)" % args.rc}
        if raw.strip():
            result["stdout_tail"] = raw.strip()[-500:]
    elif args.rc != 0 and "error" not in result:
        result["error"] = "the load tool exited with status %d" % args.rc

    if args.relay_cpu and "error" not in result:
        before, after, rss = args.relay_cpu
        cpu = max(0.0, after - before)
        result["server_cpu_s"] = round(cpu, 3)
        result["server_rss_kib_after"] = int(rss)
        msgs = (result.get("msgs_per_sec") or 0) * (result.get("duration_s") or 0)
        if msgs > 0:
            # Whole run (connection setup and drain included), so a slight overestimate.
            result["server_cpu_us_per_msg"] = round(cpu * 1e6 / msgs, 1)

    labelled = {"target": args.target, "label": args.label, "rep": args.rep, "rc": args.rc}
    for kv in args.set:
        k, _, val = kv.partition("=")
        labelled[k] = parse_value(val)
    labelled.update(result)
    # The labels win over same-named fields of the tool (the tool's own "server" is its address).
    labelled.update({"target": args.target, "label": args.label, "rep": args.rep})
    with open(args.file, "a", encoding="utf-8") as f:
        f.write(json.dumps(labelled, sort_keys=True) + "\n")
    print("  %-8s %-10s rep %d: %s" % (args.target, args.label, args.rep, summary(result)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

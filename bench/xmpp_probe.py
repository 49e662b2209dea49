#!/usr/bin/env python3
"""A one-connection XMPP client for checking a benchmark server by hand (standard library only).

It connects to 127.0.0.1:PORT over STARTTLS or direct TLS, optionally creates the account by
in-band registration (XEP-0077), logs in with SCRAM-SHA-256, SCRAM-SHA-1 or PLAIN, binds a
resource, sends itself a message and waits for it, then closes the stream. It prints one JSON
line on stdout and exits 0 when every step passed, 1 otherwise.

compare.sh runs it once per server before the load tool, so that a broken configuration shows up
as a clear error instead of as a table of zeros.

Example:
  python3 bench/xmpp_probe.py --port 35222 --domain prosody.test --user probe --password x \
      --register --mech SCRAM-SHA-1
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import sys
import time
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_CLIENT = "jabber:client"
NS_REGISTER = "jabber:iq:register"


class ProbeError(Exception):
    pass


def q(ns, tag):
    return "{%s}%s" % (ns, tag)


def esc(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


class Stream:
    """An XML stream over a socket: sends text, yields top-level elements."""

    def __init__(self, sock, domain, deadline):
        self.sock = sock
        self.domain = domain
        self.deadline = deadline
        self.parser = None
        self.depth = 0
        self.pending = []

    def send(self, text):
        self.sock.sendall(text.encode("utf-8"))

    def restart(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.pending = []
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>"
                  % esc(self.domain))

    def next(self):
        """The next complete top-level element of the stream."""
        while not self.pending:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ProbeError("timed out waiting for the server")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise ProbeError("timed out waiting for the server") from None
            if not data:
                raise ProbeError("the server closed the connection")
            self.parser.feed(data)
            for event, elem in self.parser.read_events():
                if event == "start":
                    self.depth += 1
                else:
                    self.depth -= 1
                    if self.depth == 1:
                        self.pending.append(elem)
                    elif self.depth == 0:
                        raise ProbeError("the server closed the stream")
        return self.pending.pop(0)

    def expect(self, ns, tag):
        el = self.next()
        if el.tag == q(NS_STREAM, "error"):
            raise ProbeError("stream error: %s" % ",".join(c.tag.split("}")[-1] for c in el))
        if el.tag != q(ns, tag):
            raise ProbeError("expected <%s/>, got %s" % (tag, ET.tostring(el, "unicode")[:300]))
        return el


def tls_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # loopback test servers with self-signed certificates
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def hi(name, password, salt, iterations):
    return hashlib.pbkdf2_hmac(name, password, salt, iterations)


def scram(st, mech, user, password):
    name = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech]
    cnonce = base64.b64encode(os.urandom(18)).decode()
    bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), cnonce)
    first = "n,," + bare
    st.send("<auth xmlns='%s' mechanism='%s'>%s</auth>"
            % (NS_SASL, mech, base64.b64encode(first.encode()).decode()))
    el = st.next()
    if el.tag != q(NS_SASL, "challenge"):
        raise ProbeError("SASL: %s" % ET.tostring(el, "unicode")[:300])
    server_first = base64.b64decode(el.text or "").decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    if not attrs["r"].startswith(cnonce):
        raise ProbeError("SASL: server nonce does not extend ours")
    salt = base64.b64decode(attrs["s"])
    iterations = int(attrs["i"])
    salted = hi(name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", name).digest()
    stored_key = hashlib.new(name, client_key).digest()
    without_proof = "c=biws,r=%s" % attrs["r"]
    auth_message = ",".join([bare, server_first, without_proof]).encode()
    signature = hmac.new(stored_key, auth_message, name).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = "%s,p=%s" % (without_proof, base64.b64encode(proof).decode())
    st.send("<response xmlns='%s'>%s</response>" % (NS_SASL, base64.b64encode(final.encode()).decode()))
    el = st.next()
    if el.tag != q(NS_SASL, "success"):
        raise ProbeError("SASL failed: %s" % ET.tostring(el, "unicode")[:300])
    server_key = hmac.new(salted, b"Server Key", name).digest()
    expected = base64.b64encode(hmac.new(server_key, auth_message, name).digest()).decode()
    got = base64.b64decode(el.text or "").decode()
    if got != "v=" + expected:
        raise ProbeError("SASL: wrong server signature")
    return iterations


def run(args):
    out = {"server": "127.0.0.1:%d" % args.port, "domain": args.domain, "direct_tls": args.direct_tls,
           "mech": args.mech}
    deadline = time.monotonic() + args.timeout
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    ctx = tls_context()
    try:
        if args.direct_tls:
            sock = ctx.wrap_socket(raw, server_hostname=args.domain)
        else:
            sock = raw
        st = Stream(sock, args.domain, deadline)
        st.restart()
        feats = st.expect(NS_STREAM, "features")
        if not args.direct_tls:
            if feats.find(q(NS_TLS, "starttls")) is None:
                raise ProbeError("no STARTTLS offered")
            st.send("<starttls xmlns='%s'/>" % NS_TLS)
            st.expect(NS_TLS, "proceed")
            sock = ctx.wrap_socket(raw, server_hostname=args.domain)
            st.sock = sock
            st.restart()
            feats = st.expect(NS_STREAM, "features")
        out["tls_version"] = sock.version()
        mechs = [m.text for m in feats.iter(q(NS_SASL, "mechanism"))]
        out["mechanisms"] = mechs
        out["register_offered"] = feats.find("{http://jabber.org/features/iq-register}register") is not None
        if args.register:
            st.send("<iq type='set' id='reg1'><query xmlns='%s'><username>%s</username>"
                    "<password>%s</password></query></iq>"
                    % (NS_REGISTER, esc(args.user), esc(args.password)))
            el = st.expect(NS_CLIENT, "iq")
            if el.get("type") == "result":
                out["register"] = "ok"
            else:
                err = el.find(q(NS_CLIENT, "error"))
                cond = [c.tag.split("}")[-1] for c in (err if err is not None else [])]
                if "conflict" in cond:
                    out["register"] = "exists"
                else:
                    raise ProbeError("registration refused: %s" % ET.tostring(el, "unicode")[:400])
        if args.mech not in mechs:
            raise ProbeError("%s not offered (offered: %s)" % (args.mech, ", ".join(mechs)))
        t0 = time.monotonic()
        if args.mech == "PLAIN":
            token = base64.b64encode(("\0%s\0%s" % (args.user, args.password)).encode()).decode()
            st.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, token))
            el = st.next()
            if el.tag != q(NS_SASL, "success"):
                raise ProbeError("SASL failed: %s" % ET.tostring(el, "unicode")[:300])
        else:
            out["iterations"] = scram(st, args.mech, args.user, args.password)
        out["auth_ms"] = round((time.monotonic() - t0) * 1000, 2)
        st.restart()
        st.expect(NS_STREAM, "features")
        st.send("<iq type='set' id='bind1'><bind xmlns='%s'><resource>probe</resource></bind></iq>" % NS_BIND)
        el = st.expect(NS_CLIENT, "iq")
        jid = el.findtext("%s/%s" % (q(NS_BIND, "bind"), q(NS_BIND, "jid")))
        if el.get("type") != "result" or not jid:
            raise ProbeError("bind failed: %s" % ET.tostring(el, "unicode")[:300])
        out["jid"] = jid
        st.send("<presence/>")
        body = "probe %f" % time.time()
        st.send("<message to='%s' type='chat' id='m1'><body>%s</body></message>" % (esc(jid), esc(body)))
        while True:
            el = st.next()
            if el.tag == q(NS_CLIENT, "message") and el.findtext(q(NS_CLIENT, "body")) == body:
                break
        out["message_roundtrip"] = "ok"
        st.send("</stream:stream>")
    finally:
        try:
            raw.close()
        except OSError:
            pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True, help="client port on 127.0.0.1")
    ap.add_argument("--domain", required=True)
    ap.add_argument("--user", default="probe")
    ap.add_argument("--password", default="probe")
    ap.add_argument("--mech", default="SCRAM-SHA-256", choices=["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
    ap.add_argument("--direct-tls", action="store_true")
    ap.add_argument("--register", action="store_true", help="create the account first (XEP-0077)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole probe")
    args = ap.parse_args()
    try:
        out = run(args)
        out["ok"] = True
        rc = 0
    except (ProbeError, OSError, ssl.SSLError, ET.ParseError, KeyError, ValueError) as e:
        out = {"server": "127.0.0.1:%d" % args.port, "domain": args.domain, "ok": False,
               "error": "%s: %s" % (type(e).__name__, e)}
        rc = 1
    print(json.dumps(out))
    return rc


if __name__ == "__main__":
    sys.exit(main())

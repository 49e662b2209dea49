"""Federation interop: Zorg and the Debian packages of Prosody and ejabberd, server to server.

interop/federation.sh starts six servers (Zorg, Prosody and ejabberd with certificates from
the auditor's CA, and a rogue domain on each with a certificate from another CA) and passes
them in ZORG_FED_SERVERS (JSON: name -> domain, host, port, ca, log); run through that script,
not directly. Every account's password is "pw-<name>-interop"; every server has alice, bob and
carol. slixmpp clients log in on each side; every wait is bounded (TIMEOUT, and each test as a
whole by TEST_TIMEOUT), and every message carries a fresh token so that a late one cannot be
taken for another test's.

What each peer does with a refused link (seen with Prosody 0.12.3 and ejabberd 23.01, and
asserted below):
- Prosody refuses the rogue Zorg's certificate right after TLS with a <not-authorized/>
  stream error ("Your server's certificate is not trusted"; its log: "Forbidding insecure
  connection to/from rogue.interop.example because its certificate is not trusted"). ejabberd
  offers SASL EXTERNAL and answers the <auth/> with a failure (its log: "Failed inbound s2s
  EXTERNAL authentication ...: self signed certificate in certificate chain"). Either way the
  rogue Zorg bounces the queued message to its sender with remote-server-not-found.
- When Zorg refuses a peer's certificate it bounces its own user's message with
  remote-server-not-found and logs "outbound s2s link refused" with reason=untrusted-root; for
  a peer's inbound link it logs "inbound s2s link refused" with reason=untrusted-root and
  closes the stream with not-authorized (no SASL mechanism offered), and the peer bounces its
  user's message with remote-server-timeout (type wait): Prosody's text is "Server-to-server
  connection failed: No viable authentication method offered by remote server", ejabberd's
  "Authentication failed: Peer provided no SASL mechanisms; most likely it doesn't accept our
  certificate".
"""

import asyncio
import json
import os
import re
import ssl
import time
import uuid

import pytest
import slixmpp

SERVERS = json.loads(os.environ.get("ZORG_FED_SERVERS", "{}"))

#: Upper bound for one wait (a login, a message, a log line).
TIMEOUT = 20
#: Upper bound for one test.
TEST_TIMEOUT = 45
#: How long a message that must not arrive is waited for once the refusal is seen.
QUIET = 2

pytestmark = pytest.mark.skipif(not SERVERS, reason="run through interop/federation.sh")


def domain(server: str) -> str:
    return SERVERS[server]["domain"]


def run(coro):
    """Runs one test's coroutine, bounded by TEST_TIMEOUT."""
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


class Client(slixmpp.ClientXMPP):
    """A slixmpp client for NAME@<server's domain>, over STARTTLS, trusting that server's CA."""

    def __init__(self, server: str, name: str):
        s = SERVERS[server]
        super().__init__(f"{name}@{s['domain']}/interop", f"pw-{name}-interop")
        self.address_ = (s["host"], s["port"])
        ctx = ssl.create_default_context(cafile=s["ca"])
        ctx.check_hostname = True
        self.ssl_context = ctx
        self.enable_plaintext = False
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.plugin['feature_mechanisms'].unencrypted_plain = False
        self.session = self.loop.create_future()
        self.inbox = asyncio.Queue()
        self.add_event_handler("session_start", lambda _: self._settle(None))
        self.add_event_handler("failed_all_auth", lambda _: self._settle(
            ConnectionError(f"{self.boundjid}: authentication failed")))
        self.add_event_handler("connection_failed", lambda e: self._settle(
            ConnectionError(f"{self.boundjid}: connection failed: {e}")))
        self.add_event_handler("disconnected", lambda r: self._settle(
            ConnectionError(f"{self.boundjid}: disconnected before the session: {r}")))
        # slixmpp raises "message" only for messages with a body; bounces may have none.
        self.add_event_handler("message", self.inbox.put_nowait)
        self.add_event_handler("message_error", self.inbox.put_nowait)

    def _settle(self, exc):
        if self.session.done():
            return
        if exc is None:
            self.session.set_result(True)
        else:
            self.session.set_exception(exc)

    async def login(self):
        """Connects, authenticates, binds, sends available presence."""
        self.connect(*self.address_)
        try:
            await asyncio.wait_for(self.session, TIMEOUT)
        except BaseException:
            self.abort()
            raise
        self.send_presence()

    async def logout(self):
        try:
            await asyncio.wait_for(self.disconnect(), TIMEOUT)
        except asyncio.TimeoutError:
            self.abort()

    async def next_message(self, pred, timeout=TIMEOUT):
        """The next message that satisfies `pred`; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError
            msg = await asyncio.wait_for(self.inbox.get(), left)
            if pred(msg):
                return msg


async def session(*clients):
    await asyncio.gather(*(c.login() for c in clients))


async def close(*clients):
    await asyncio.gather(*(c.logout() for c in clients), return_exceptions=True)


def token() -> str:
    return uuid.uuid4().hex[:12]


def read_log(server: str) -> str:
    with open(SERVERS[server]["log"], errors="replace") as f:
        return f.read()


def log_line(server: str, pattern: str, timeout: float = 5) -> str:
    """The first line of SERVER's log that matches `pattern` (a regex), waiting for it a little:
    servers log some lines just after the stanzas have gone."""
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern)
    while True:
        for line in read_log(server).splitlines():
            if regex.search(line):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no line matching {pattern!r} in {SERVERS[server]['log']}")
        time.sleep(0.2)


def zorg_link_line(zorg: str, what: str, remote: str, **fields) -> str:
    """A line of Zorg's log (human format: message, then key=value fields) about a link."""
    pattern = re.escape(what) + r".*\bremote=" + re.escape(domain(remote)) + r"\b"
    for k, v in fields.items():
        pattern = r"(?=.*\b" + k + "=" + re.escape(v) + r"\b)" + pattern
    return log_line(zorg, pattern)


async def exchange(sender: str, recipient: str):
    """alice@SENDER sends a chat message to bob@RECIPIENT, who must receive it as sent."""
    a, b = Client(sender, "alice"), Client(recipient, "bob")
    try:
        await session(a, b)
        body = f"interop {sender} -> {recipient} {token()}"
        a.send_message(mto=b.boundjid.bare, mbody=body, mtype="chat")
        msg = await b.next_message(lambda m: m["body"] == body)
        assert msg["type"] == "chat"
        assert msg["from"].bare == a.boundjid.bare, msg
        assert msg["from"].resource == "interop", msg
        assert msg["to"].bare == b.boundjid.bare, msg
    finally:
        await close(a, b)


async def refused(sender: str, recipient: str, name: str = "carol"):
    """NAME@SENDER sends to NAME@RECIPIENT across a refused link. Returns the error bounced to
    the sender (None when none came within TIMEOUT); the recipient must get nothing."""
    a, b = Client(sender, name), Client(recipient, name)
    try:
        await session(a, b)
        body = f"must not arrive {sender} -> {recipient} {token()}"
        a.send_message(mto=b.boundjid.bare, mbody=body, mtype="chat")
        try:
            bounce = await a.next_message(
                lambda m: m["type"] == "error" and m["from"].bare == b.boundjid.bare)
        except asyncio.TimeoutError:
            bounce = None
        print(f"bounced to {a.boundjid}: {bounce}")
        with pytest.raises(asyncio.TimeoutError):
            got = await b.next_message(lambda m: m["body"] == body, timeout=QUIET)
            pytest.fail(f"{recipient} received a message over a refused link: {got}")
        return bounce
    finally:
        await close(a, b)


def assert_bounced(bounce, condition="remote-server-not-found", error_type="cancel"):
    assert bounce is not None, "no error came back to the sender"
    assert bounce["error"]["condition"] == condition, bounce
    assert bounce["error"]["type"] == error_type, bounce


# What the peers log (Prosody 0.12 at level debug, ejabberd 23.01 at level info), as regexes
# with {zorg}, {rogue}, {peer} for the domains.
PEER_SAYS = {
    # The peer accepted Zorg's certificate on Zorg's link to it (SASL EXTERNAL, inbound there).
    ("prosody", "external-in"): r"Accepting SASL EXTERNAL identity from {zorg}$",
    ("ejabberd", "external-in"): r"Accepted inbound s2s EXTERNAL authentication {zorg} -> {peer} ",
    # Zorg accepted the peer's certificate on the peer's link to Zorg.
    ("prosody", "external-out"): r"SASL EXTERNAL with {zorg} succeeded",
    ("ejabberd", "external-out"): r"Accepted outbound s2s EXTERNAL authentication {peer} -> {zorg} ",
    # The peer refused the rogue Zorg's certificate.
    ("prosody", "refuses"): r"Forbidding insecure connection to/from {rogue} because its "
                            r"certificate is not trusted",
    ("ejabberd", "refuses"): r"Failed inbound s2s EXTERNAL authentication {rogue} -> {peer} .*: "
                             r"self signed certificate in certificate chain",
    # The rogue peer's link to Zorg failed (Zorg offered no SASL mechanism).
    ("rogue-prosody", "refused"): r"No SASL EXTERNAL offer and Dialback doesn't seem to be "
                                  r"enabled, giving up",
    # ejabberd logs one of two lines: it usually reads the empty features ("Failed outbound s2s
    # EXTERNAL authentication ...: Peer provided no SASL mechanisms ..."), but when Zorg's
    # features, stream error and TLS close arrive together it may report the closed connection
    # first ("Failed to establish outbound s2s connection ...: Connection failed: invalid
    # argument"), and its bounce then says that.
    ("rogue-ejabberd", "refused"): r"Failed (outbound s2s EXTERNAL authentication|to establish "
                                   r"outbound s2s connection) {peer} -> {zorg}\b",
}

#: The text of the error a peer bounces to its user when Zorg refused its link.
PEER_BOUNCE_TEXT = {
    "rogue-prosody": r"^Server-to-server connection failed: No viable authentication method",
    "rogue-ejabberd": r"^(Authentication failed: Peer provided no SASL mechanisms|Connection failed)",
}


def peer_says(peer: str, what: str) -> str:
    """The line of PEER's log that PEER_SAYS[(peer, what)] describes."""
    names = {k: re.escape(domain(v)) for k, v in
             (("zorg", "zorg"), ("rogue", "rogue"), ("peer", peer))}
    line = log_line(peer, PEER_SAYS[(peer, what)].format(**names))
    print(f"{peer}: {line}")
    return line


# --- messages both ways, over certificate-authenticated links -----------------------------------

@pytest.mark.parametrize("peer", ["prosody", "ejabberd"])
def test_zorg_user_to_peer_user(peer):
    run(exchange("zorg", peer))
    # Zorg knows no other way to authenticate a link than SASL EXTERNAL: "accepted" means the
    # peer offered it for Zorg's certificate and answered <success/>. The address is the one
    # the hosts file gives (Zorg found it through DNS: SRV, then A).
    zorg_link_line("zorg", "outbound s2s link accepted", peer, local=domain("zorg"),
                   addr=f"{SERVERS[peer]['host']}:5269")
    peer_says(peer, "external-in")


@pytest.mark.parametrize("peer", ["prosody", "ejabberd"])
def test_peer_user_to_zorg_user(peer):
    run(exchange(peer, "zorg"))
    # The peer authenticated its own link with SASL EXTERNAL (Zorg offers nothing else).
    zorg_link_line("zorg", "inbound s2s link accepted", peer, local=domain("zorg"))
    peer_says(peer, "external-out")


# --- an untrusted Zorg is refused by the peers ---------------------------------------------------

@pytest.mark.parametrize("peer", ["prosody", "ejabberd"])
def test_peer_refuses_zorg_with_untrusted_certificate(peer):
    bounce = run(refused("rogue", peer))
    peer_says(peer, "refuses")
    zorg_link_line("rogue", "outbound s2s link refused", peer)
    assert_bounced(bounce)


# Prosody refuses in place of the stream features after TLS (<not-authorized/>, "Your server's
# certificate is not trusted"); ejabberd offers no SASL mechanism. Both are peer-refused.
@pytest.mark.parametrize("peer", ["prosody", "ejabberd"])
def test_zorg_logs_why_the_peer_refused_it(peer):
    """The rogue Zorg's log says that the peer refused its certificate (not a network fault)."""
    run(refused("rogue", peer, name="bob"))
    line = zorg_link_line("rogue", "outbound s2s link refused", peer)
    print(f"rogue zorg: {line}")
    assert 'reason="peer-refused"' in line or "reason=peer-refused" in line, line
    if peer == "prosody":
        assert "not-authorized" in line, line


# --- Zorg refuses peers with certificates from an untrusted CA -----------------------------------

@pytest.mark.parametrize("peer", ["rogue-prosody", "rogue-ejabberd"])
def test_zorg_refuses_peer_with_untrusted_certificate_outbound(peer):
    bounce = run(refused("zorg", peer))
    line = zorg_link_line("zorg", "outbound s2s link refused", peer)
    print(f"zorg: {line}")
    assert "untrusted-root" in line and "chains to an untrusted root" in line, line
    assert_bounced(bounce)
    assert domain(peer) in (bounce["error"]["text"] or ""), bounce


@pytest.mark.parametrize("peer", ["rogue-prosody", "rogue-ejabberd"])
def test_zorg_refuses_peer_with_untrusted_certificate_inbound(peer):
    bounce = run(refused(peer, "zorg"))
    line = zorg_link_line("zorg", "inbound s2s link refused", peer)
    print(f"zorg: {line}")
    assert "untrusted-root" in line and "chains to an untrusted root" in line, line
    peer_says(peer, "refused")
    # The peer bounces its user's message: both Prosody and ejabberd call a failed link of their
    # own remote-server-timeout (type wait), with a text that says what went wrong.
    assert_bounced(bounce, "remote-server-timeout", "wait")
    assert re.search(PEER_BOUNCE_TEXT[peer], bounce["error"]["text"] or ""), bounce

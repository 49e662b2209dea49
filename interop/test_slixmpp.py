"""Interop: slixmpp (from PyPI) and go-sendxmpp (from Debian) against a real `zorg serve`.

interop/run.sh starts the server and passes it in ZORG_INTEROP_* variables; run through that
script, not directly. Every account's password is "pw-<name>-interop". Each test uses its own
accounts, so a failure in one does not leave state that breaks another, and each is bounded by
asyncio.wait_for (at most 20 s).

About SCRAM-SHA-256-PLUS with slixmpp: slixmpp's SCRAM takes its channel binding from Python's
ssl module, which (up to at least 3.13) offers only `tls-unique`. On TLS 1.3, where `tls-unique`
does not exist (RFC 9266), slixmpp would need `tls-exporter`, which Python's ssl does not
expose, so stock slixmpp cancels -PLUS and falls back (see its SCRAM.setup). Zorg offers
`tls-exporter` and `tls-server-end-point` (not `tls-unique`, unsafe on TLS 1.2 without
extended master secret and absent from TLS 1.3). So the -PLUS tests below run slixmpp's own
SCRAM code with one change: the gs2 header names `tls-server-end-point`, and the binding data
is the SHA-256 hash of the certificate the server presented (RFC 5929 §4.1), computed here.
If a future Python exposes `tls-exporter`, the stock slixmpp test runs as well.
"""

import asyncio
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
import slixmpp
from slixmpp.util.sasl import client as sasl_client
from slixmpp.util.sasl.mechanisms import SCRAM

HOST = os.environ.get("ZORG_INTEROP_HOST", "127.0.0.1")
DOMAIN = os.environ.get("ZORG_INTEROP_DOMAIN", "localhost")
STARTTLS_PORT = int(os.environ.get("ZORG_INTEROP_STARTTLS_PORT", "5222"))
DIRECT_TLS_PORT = int(os.environ.get("ZORG_INTEROP_DIRECT_TLS_PORT", "5223"))
CA_FILE = os.environ.get("ZORG_INTEROP_CA", "zorg-data/certs/localhost.crt")
SERVER_PID = os.environ.get("ZORG_INTEROP_SERVER_PID")
WORK_DIR = os.environ.get("ZORG_INTEROP_WORK")

#: Upper bound for every test and every wait inside one.
TIMEOUT = 20


def password_of(name: str) -> str:
    return f"pw-{name}-interop"


def trust_context() -> ssl.SSLContext:
    """Trusts exactly the server's generated self-signed certificate, hostname checked."""
    ctx = ssl.create_default_context(cafile=CA_FILE)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def run(coro):
    """Runs one test's coroutine, bounded by TIMEOUT."""
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT))


class AuthFailed(Exception):
    """The server refused the credentials."""


class Client(slixmpp.ClientXMPP):
    """A slixmpp client for account `name`, pinned to one SASL mechanism and one transport."""

    def __init__(self, name, *, password=None, mech="SCRAM-SHA-256", direct_tls=False,
                 resource=None):
        jid = f"{name}@{DOMAIN}" + (f"/{resource}" if resource else "")
        super().__init__(jid, password_of(name) if password is None else password,
                         sasl_mech=mech)
        self.ssl_context = trust_context()
        self.enable_plaintext = False
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.port = DIRECT_TLS_PORT if direct_tls else STARTTLS_PORT
        self.plugin['feature_mechanisms'].unencrypted_plain = False
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0199')
        self.session = self.loop.create_future()
        self.closed = self.loop.create_future()
        self.auth_failures = []
        self.inbox = asyncio.Queue()
        self.presences = asyncio.Queue()
        self.stream_errors = asyncio.Queue()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_auth", lambda s: self.auth_failures.append(s['condition']))
        self.add_event_handler("failed_all_auth", lambda _: self._fail(
            AuthFailed(f"{jid}: authentication failed: {self.auth_failures}")))
        self.add_event_handler("connection_failed", lambda e: self._fail(
            ConnectionError(f"{jid}: connection failed: {e}")))
        self.add_event_handler("disconnected", self._disconnected)
        self.add_event_handler("message", self.inbox.put_nowait)
        self.add_event_handler("presence_available", self.presences.put_nowait)
        self.add_event_handler("stream_error", self.stream_errors.put_nowait)

    def _started(self, _event):
        if not self.session.done():
            self.session.set_result(True)

    def _disconnected(self, reason):
        self._fail(ConnectionError(f"{self.requested_jid}: disconnected before the session "
                                   f"started: {reason}"))
        if not self.closed.done():
            self.closed.set_result(reason)

    def _fail(self, exc):
        if not self.session.done():
            self.session.set_exception(exc)

    @property
    def mechanism(self) -> str:
        return self.plugin['feature_mechanisms'].mech.name

    async def login(self, presence=True):
        """Connects, authenticates, binds; then fetches the roster and sends presence."""
        self.connect(HOST, self.port)
        try:
            await asyncio.wait_for(self.session, TIMEOUT)
        except BaseException:
            self.abort()
            raise
        if presence:
            await self.get_roster(timeout=TIMEOUT)
            self.send_presence()

    async def logout(self):
        await asyncio.wait_for(self.disconnect(), TIMEOUT)

    async def next_message(self, sender_bare: str):
        """The next message with a body from `sender_bare`."""
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), TIMEOUT)
            if msg['from'].bare == sender_bare and msg['body']:
                return msg

    async def available_from(self, contact_bare: str):
        """Waits for available presence from `contact_bare`."""
        while True:
            pres = await asyncio.wait_for(self.presences.get(), TIMEOUT)
            if pres['from'].bare == contact_bare:
                return pres


async def login_fails(client: Client) -> list:
    with pytest.raises(AuthFailed):
        await client.login()
    return client.auth_failures


# --- SCRAM with channel binding tls-server-end-point (see the module docstring) ------------

class ScramServerEndPoint(SCRAM):
    """slixmpp's SCRAM, with the gs2 header naming tls-server-end-point."""

    def process_1(self, challenge):
        super().process_1(challenge)
        authzid = self.gs2_header.split(b',')[1]
        self.gs2_header = b'p=tls-server-end-point,' + authzid + b','
        self.client_first_message = self.gs2_header + self.client_first_message_bare
        return self.client_first_message


class ServerEndPointMechanism:
    """Within the block, slixmpp's SCRAM-SHA-256-PLUS uses tls-server-end-point."""

    def __enter__(self):
        self.saved = sasl_client.MECHANISMS['SCRAM-SHA-256-PLUS']
        sasl_client.MECHANISMS['SCRAM-SHA-256-PLUS'] = ScramServerEndPoint
        return self

    def __exit__(self, *exc):
        sasl_client.MECHANISMS['SCRAM-SHA-256-PLUS'] = self.saved


def bind_to_server_certificate(client: Client, tamper: bool = False):
    """Feeds RFC 5929 tls-server-end-point data (SHA-256 of the server's certificate; Zorg's
    generated certificates are signed with ECDSA-SHA-256) as the channel binding."""
    mechanisms = client.plugin['feature_mechanisms']
    default = mechanisms._default_credentials

    def credentials(required, optional):
        values = default(required, optional)
        if 'channel_binding' in optional:
            der = client.socket.getpeercert(binary_form=True)
            binding = hashlib.sha256(der).digest()
            if tamper:
                binding = bytes(b ^ 0xFF for b in binding)
            values['channel_binding'] = binding
        return values

    mechanisms.sasl_callback = credentials


# --- raw stream features -----------------------------------------------------------------

FEATURES_END = re.compile(rb"</(?:stream:)?features>")


def read_features(sock) -> bytes:
    data = b""
    deadline = time.monotonic() + TIMEOUT
    while not FEATURES_END.search(data):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete <features/>; got {data!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"stream closed; got {data!r}")
        data += chunk
    return data


def stream_header() -> bytes:
    return (f"<?xml version='1.0'?><stream:stream to='{DOMAIN}' version='1.0' "
            "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>").encode()


def test_features_before_and_after_starttls():
    """RFC 6120 §5.3.1 / §6.4.1: TLS is required and nothing else is offered before it; after
    it, SCRAM with and without -PLUS, PLAIN (enabled here for go-sendxmpp), and XEP-0440's list
    of channel-binding types."""
    with socket.create_connection((HOST, STARTTLS_PORT), timeout=TIMEOUT) as raw:
        raw.sendall(stream_header())
        before = read_features(raw)
        assert b"urn:ietf:params:xml:ns:xmpp-tls" in before, before
        assert b"required" in before, before
        assert b"<mechanism>" not in before, before
        raw.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        proceed = b""
        while b"proceed" not in proceed:
            chunk = raw.recv(4096)
            assert chunk, f"stream closed instead of <proceed/>: {proceed!r}"
            proceed += chunk
        with trust_context().wrap_socket(raw, server_hostname=DOMAIN) as tls:
            tls.sendall(stream_header())
            after = read_features(tls)
    mechanisms = set(re.findall(rb"<mechanism>([^<]+)</mechanism>", after))
    assert {b"SCRAM-SHA-256", b"SCRAM-SHA-256-PLUS", b"SCRAM-SHA-1", b"SCRAM-SHA-1-PLUS",
            b"PLAIN"} <= mechanisms, after
    bindings = set(re.findall(rb"<channel-binding[^>]*type=['\"]([^'\"]+)", after))
    assert {b"tls-exporter", b"tls-server-end-point"} <= bindings, after


def test_scram_sha_256_over_starttls():
    async def scenario():
        alice = Client("alice", mech="SCRAM-SHA-256")
        await alice.login()
        assert alice.mechanism == "SCRAM-SHA-256"
        # No resource was asked for: the server made one (RFC 6120 §7.6).
        assert alice.boundjid.bare == f"alice@{DOMAIN}"
        assert alice.boundjid.resource
        await alice.logout()
    run(scenario())


def test_scram_sha_1_over_direct_tls():
    """XEP-0368: TLS from the first byte, then SCRAM-SHA-1 and a client-chosen resource."""
    async def scenario():
        bob = Client("bob", mech="SCRAM-SHA-1", direct_tls=True, resource="laptop")
        await bob.login()
        assert bob.mechanism == "SCRAM-SHA-1"
        assert bob.boundjid.full == f"bob@{DOMAIN}/laptop"
        await bob.logout()
    run(scenario())


def test_scram_sha_256_plus_with_tls_server_end_point():
    async def scenario():
        with ServerEndPointMechanism():
            carol = Client("carol", mech="SCRAM-SHA-256-PLUS")
            bind_to_server_certificate(carol)
            await carol.login()
            assert carol.mechanism == "SCRAM-SHA-256-PLUS"
            await carol.logout()
    run(scenario())


def test_scram_sha_256_plus_with_the_wrong_binding_is_refused():
    """A man in the middle would present another certificate: the binding would not match."""
    async def scenario():
        with ServerEndPointMechanism():
            grace = Client("grace", mech="SCRAM-SHA-256-PLUS")
            bind_to_server_certificate(grace, tamper=True)
            failures = await login_fails(grace)
            assert failures == ["not-authorized"], failures
    run(scenario())


@pytest.mark.skipif("tls-exporter" not in ssl.CHANNEL_BINDING_TYPES,
                    reason="this Python's ssl has no tls-exporter, so stock slixmpp cannot do "
                           "SCRAM-*-PLUS over TLS 1.3 (see the module docstring)")
def test_scram_sha_256_plus_stock_slixmpp_tls_exporter():
    async def scenario():
        carol = Client("carol", mech="SCRAM-SHA-256-PLUS", resource="exporter")
        await carol.login()
        assert carol.mechanism == "SCRAM-SHA-256-PLUS"
        await carol.logout()
    run(scenario())


def test_wrong_password_is_refused():
    async def scenario():
        henry = Client("henry", password="not-the-password", mech="SCRAM-SHA-256")
        failures = await login_fails(henry)
        assert failures == ["not-authorized"], failures
        # The right password still works afterwards (one failure is below every limit).
        henry = Client("henry", mech="SCRAM-SHA-256")
        await henry.login()
        await henry.logout()
    run(scenario())


def test_disco_and_ping():
    """XEP-0030 on the server and XEP-0199 ping, through slixmpp's plugins."""
    async def scenario():
        alice = Client("alice", resource="disco")
        await alice.login()
        info = await alice.plugin['xep_0030'].get_info(jid=DOMAIN, timeout=TIMEOUT)
        features = set(info['disco_info']['features'])
        for feature in ["http://jabber.org/protocol/disco#info", "urn:xmpp:ping",
                        "urn:xmpp:blocking", "urn:xmpp:time"]:
            assert feature in features, features
        identities = {(i[0], i[1]) for i in info['disco_info']['identities']}
        assert ("server", "im") in identities, identities
        rtt = await alice.plugin['xep_0199'].ping(jid=DOMAIN, timeout=TIMEOUT)
        assert rtt is not None
        await alice.logout()
    run(scenario())


def test_subscription_presence_and_messages_between_two_clients():
    """RFC 6121: dave subscribes to erin; slixmpp's defaults (auto_authorize, auto_subscribe)
    approve and subscribe back, so both end with subscription 'both', see each other online,
    and exchange messages both ways."""
    async def scenario():
        dave = Client("dave", resource="desk")
        erin = Client("erin", mech="SCRAM-SHA-1", direct_tls=True, resource="phone")
        await dave.login()
        await erin.login()
        dave_bare, erin_bare = dave.boundjid.bare, erin.boundjid.bare

        dave.send_presence_subscription(pto=erin_bare, ptype="subscribe")
        await dave.available_from(erin_bare)
        await erin.available_from(dave_bare)

        async def both(client, contact):
            while client.client_roster[contact]['subscription'] != 'both':
                await asyncio.sleep(0.1)
        await asyncio.wait_for(both(dave, erin_bare), TIMEOUT)
        await asyncio.wait_for(both(erin, dave_bare), TIMEOUT)

        # Fresh rosters from the server agree.
        await dave.get_roster(timeout=TIMEOUT)
        assert dave.client_roster[erin_bare]['subscription'] == 'both'

        dave.send_message(mto=erin_bare, mbody="hello erin", mtype="chat")
        msg = await erin.next_message(dave_bare)
        assert msg['body'] == "hello erin"
        assert msg['from'] == dave.boundjid

        erin.send_message(mto=dave.boundjid, mbody="hello dave", mtype="chat")
        msg = await dave.next_message(erin_bare)
        assert msg['body'] == "hello dave"
        assert msg['from'] == erin.boundjid

        await erin.logout()
        await dave.logout()
    run(scenario())


def test_message_carbons_between_two_resources():
    """XEP-0280 with slixmpp's own plugin: kate's desk enables carbons and sees what her phone
    receives and sends; the phone, which did not enable them, gets nothing extra."""
    async def scenario():
        phone = Client("kate", resource="phone")
        desk = Client("kate", resource="desk")
        desk.register_plugin('xep_0280')
        leo = Client("leo", resource="pc")
        received, sent = asyncio.Queue(), asyncio.Queue()
        desk.add_event_handler("carbon_received", received.put_nowait)
        desk.add_event_handler("carbon_sent", sent.put_nowait)
        for c in (phone, desk, leo):
            await c.login()
        await desk.plugin['xep_0280'].enable(timeout=TIMEOUT)
        kate_bare, leo_bare = phone.boundjid.bare, leo.boundjid.bare

        leo.send_message(mto=phone.boundjid, mbody="BP 120/80", mtype="chat")
        msg = await phone.next_message(leo_bare)
        assert msg['body'] == "BP 120/80"
        carbon = await asyncio.wait_for(received.get(), TIMEOUT)
        assert carbon['from'] == kate_bare
        inner = carbon['carbon_received']
        assert inner['body'] == "BP 120/80"
        assert inner['from'] == leo.boundjid and inner['to'] == phone.boundjid

        phone.send_message(mto=leo_bare, mbody="noted", mtype="chat")
        assert (await leo.next_message(kate_bare))['body'] == "noted"
        carbon = await asyncio.wait_for(sent.get(), TIMEOUT)
        inner = carbon['carbon_sent']
        assert inner['body'] == "noted"
        assert inner['from'] == phone.boundjid and inner['to'].bare == leo_bare

        for c in (leo, desk, phone):
            await c.logout()
    run(scenario())


def test_stream_management_resumes_after_a_dropped_connection():
    """XEP-0198 with slixmpp's own plugin: grace's phone enables stream management with
    resumption; its TCP connection is cut without a closing tag; henry writes meanwhile; the
    phone reconnects, resumes the same session (same full JID, no new bind) and gets the
    message that was sent while it was away."""
    async def scenario():
        phone = Client("grace", resource="sm-phone")
        phone.register_plugin('xep_0198')
        henry = Client("henry", resource="sm-pc")
        enabled, resumed = phone.loop.create_future(), phone.loop.create_future()
        phone.add_event_handler("sm_enabled", lambda _: enabled.done() or enabled.set_result(1))
        phone.add_event_handler("session_resumed",
                                lambda _: resumed.done() or resumed.set_result(1))
        await phone.login()
        await henry.login()
        await asyncio.wait_for(enabled, TIMEOUT)
        sm = phone.plugin['xep_0198']
        assert sm.sm_id, "the server offered resumption"
        full, henry_bare = phone.boundjid.full, henry.boundjid.bare

        henry.send_message(mto=full, mbody="before the tunnel", mtype="chat")
        assert (await phone.next_message(henry_bare))['body'] == "before the tunnel"

        # The network goes away: no </stream:stream>, no TLS close, just a reset.
        lost = phone.loop.create_future()
        phone.add_event_handler("disconnected", lambda _: lost.done() or lost.set_result(1),
                                disposable=True)
        phone.transport.abort()
        await asyncio.wait_for(lost, TIMEOUT)

        henry.send_message(mto=full, mbody="while you were in the tunnel", mtype="chat")
        # A round trip, so that the message was routed to the waiting session.
        await henry.plugin['xep_0199'].ping(jid=DOMAIN, timeout=TIMEOUT)

        phone.connect(HOST, phone.port)
        await asyncio.wait_for(resumed, TIMEOUT)
        assert phone.boundjid.full == full
        msg = await phone.next_message(henry_bare)
        assert msg['body'] == "while you were in the tunnel"

        # The resumed session carries on both ways.
        phone.send_message(mto=henry_bare, mbody="out of the tunnel", mtype="chat")
        msg = await henry.next_message(phone.boundjid.bare)
        assert msg['body'] == "out of the tunnel"
        assert msg['from'] == full

        await henry.logout()
        await phone.logout()
    run(scenario())


def test_offline_message_is_delivered_at_next_login():
    """XEP-0160: a message to an account with no session is stored and delivered at its next
    login, with a XEP-0203 delay and a XEP-0359 stanza-id from the server."""
    async def scenario():
        alice = Client("alice", resource="offline-sender")
        await alice.login()
        alice.send_message(mto=f"frank@{DOMAIN}", mbody="while you were out", mtype="chat")
        # A round trip to the server, so the message was handled before frank logs in.
        await alice.plugin['xep_0199'].ping(jid=DOMAIN, timeout=TIMEOUT)
        await alice.logout()

        frank = Client("frank")
        await frank.login()
        msg = await frank.next_message(f"alice@{DOMAIN}")
        assert msg['body'] == "while you were out"
        assert msg.xml.find("{urn:xmpp:delay}delay") is not None, msg
        stanza_id = msg.xml.find("{urn:xmpp:sid:0}stanza-id")
        assert stanza_id is not None, msg
        assert stanza_id.get("by") == f"frank@{DOMAIN}", msg
        await frank.logout()
    run(scenario())


def test_message_archive_query_with_paging():
    """XEP-0313 with slixmpp's own plugin: leo sends kate 12 messages; kate pages through her
    archive 5 at a time (XEP-0059) and finds each once, in order, under the stanza-id she was
    given on delivery."""
    async def scenario():
        kate = Client("kate", resource="archive")
        kate.register_plugin('xep_0313')
        leo = Client("leo", resource="archive")
        for c in (kate, leo):
            await c.login()
        token = f"mam-{time.time_ns()}"
        delivered = []
        for i in range(12):
            leo.send_message(mto=kate.boundjid, mbody=f"{token} {i}", mtype="chat")
            msg = await kate.next_message(leo.boundjid.bare)
            sid = msg.xml.find("{urn:xmpp:sid:0}stanza-id")
            assert sid is not None and sid.get("by") == kate.boundjid.bare, msg
            delivered.append((sid.get("id"), msg['body']))
        # A round trip, so the last archive write is committed before the query.
        await kate.plugin['xep_0199'].ping(jid=DOMAIN, timeout=TIMEOUT)
        archived = []
        async for m in kate.plugin['xep_0313'].iterate(
                with_jid=slixmpp.JID(leo.boundjid.bare), rsm={'max': 5}):
            inner = m['mam_result']['forwarded']['stanza']
            if inner['body'].startswith(token):
                archived.append((m['mam_result']['id'], inner['body']))
        assert archived == delivered
        for c in (leo, kate):
            await c.logout()
    run(scenario())


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
def test_go_sendxmpp_message_reaches_slixmpp(direct_tls):
    """A Debian console client (go-sendxmpp: SASL PLAIN, over STARTTLS or direct TLS) sends to
    a slixmpp client of an account that does not have it in its roster; the message arrives.

    go-xmpp writes a newline after each element (`<starttls/>\\n`, `</auth>\\n`), which the server
    must take as the whitespace between elements that it is."""
    binary = shutil.which("go-sendxmpp")
    assert binary, "go-sendxmpp is not installed (apt-get install go-sendxmpp; .ci/run does)"
    port = DIRECT_TLS_PORT if direct_tls else STARTTLS_PORT
    body = f"hello from go-sendxmpp over {'direct TLS' if direct_tls else 'STARTTLS'}"

    async def scenario():
        judy = Client("judy", resource="direct" if direct_tls else "starttls")
        await judy.login()
        # Go's TLS trusts SSL_CERT_FILE: the server's own certificate, verified for real.
        # HOME is the work dir, so that no go-sendxmpp config of the developer's is read.
        env = dict(os.environ, SSL_CERT_FILE=CA_FILE, HOME=WORK_DIR or os.environ["HOME"])
        args = [binary, "--username", f"ivy@{DOMAIN}", "--password", password_of("ivy"),
                "--jserver", f"{HOST}:{port}", "--timeout", "10"]
        if direct_tls:
            args.append("--tls")
        proc = await asyncio.create_subprocess_exec(
            *args, f"judy@{DOMAIN}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(body.encode() + b"\n"), TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
        assert proc.returncode == 0, out.decode(errors="replace")
        msg = await judy.next_message(f"ivy@{DOMAIN}")
        assert msg['body'].strip() == body
        await judy.logout()
    run(scenario())


# Keep this test last: it stops the server.
def test_sigterm_closes_streams_with_system_shutdown():
    """RFC 6120 §4.9.3.22: on SIGTERM the server closes every stream with <system-shutdown/>."""
    if not SERVER_PID:
        pytest.skip("no server pid (run through interop/run.sh)")

    async def scenario():
        alice = Client("alice", resource="shutdown")
        await alice.login()
        if WORK_DIR:
            Path(WORK_DIR, "sigterm-sent").touch()
        os.kill(int(SERVER_PID), signal.SIGTERM)
        error = await asyncio.wait_for(alice.stream_errors.get(), TIMEOUT)
        assert error['condition'] == "system-shutdown", error
        await asyncio.wait_for(alice.closed, TIMEOUT)
    run(scenario())

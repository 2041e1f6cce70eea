"""Issue 16 items 1-2: outbound requests connect to the very address that was checked, and every embedded-IPv4
form of a link-local address is refused.

DNS is the one thing a test cannot serve, so ``socket.getaddrinfo`` answers from a script (our resolver seam);
the network part is a real server on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.config import Settings
from engine.model import RunStatus
from engine.outbound import LinkLocalRefused, PinnedTransport, embedded_ipv4, link_local_refusal
from engine.runner import run_flow
from engine.service import make_http_client
from engine.steps import http as http_step_module
from tests.conftest import make_event, make_flow
from tests.support import Target

REAL_GETADDRINFO = socket.getaddrinfo


class ScriptedDNS:
    """``socket.getaddrinfo`` for names in ``answers`` (a list answered in order, the last repeating); real otherwise."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: Any, port: Any, *args: Any, **kw: Any) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in self.answers:
            return REAL_GETADDRINFO(host, port, *args, **kw)
        self.asked.append(name)
        script = self.answers[name]
        if not script:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        ip = script[min(self.asked.count(name) - 1, len(script) - 1)]
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sockaddr = (ip, port or 0, 0, 0) if family == socket.AF_INET6 else (ip, port or 0)
        return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> ScriptedDNS:
    scripted = ScriptedDNS({})
    monkeypatch.setattr(socket, "getaddrinfo", scripted)
    monkeypatch.setattr(http_step_module, "_verdicts", http_step_module.HostVerdicts())
    return scripted


def _flow(url: str, **kw: Any) -> Any:
    return make_flow([{"id": "call", "http": {"method": "GET", "url": url, "timeout": "2s", **kw}}])


def test_a_name_rebound_after_the_check_is_refused_at_connect(dns: ScriptedDNS, target: Target) -> None:
    """127.0.0.1 for the check, 169.254.169.254 for the connect: the connect judges what it connects to."""
    port = target.server.server_address[1]
    dns.answers["rebind.test"] = ["127.0.0.1", "169.254.169.254"]
    with make_http_client(Settings()) as client:
        result = run_flow(_flow("http://{{ event.host }}/latest/meta-data", allow_hosts=["rebind.test"]),
                          make_event(host=f"rebind.test:{port}"), http=client)
    assert result.status is RunStatus.FAILED, result.error
    assert "link-local (169.254.169.254)" in (result.error or "")
    assert dns.asked == ["rebind.test", "rebind.test"] and target.requests() == []


def test_the_connect_goes_to_the_checked_address_and_keeps_the_name_as_host(dns: ScriptedDNS, target: Target) -> None:
    port = target.server.server_address[1]
    dns.answers["pinned.test"] = ["127.0.0.1", "127.0.0.1", "169.254.169.254"]  # a third lookup would be refused
    with make_http_client(Settings()) as client:
        flow = _flow(f"http://pinned.test:{port}/x")
        for _ in range(2):  # the second request reuses the pooled connection: no lookup at all
            assert run_flow(flow, make_event(), http=client).status is RunStatus.SUCCEEDED
    assert [s.headers["host"] for s in target.requests()] == [f"pinned.test:{port}"] * 2
    assert dns.asked == ["pinned.test", "pinned.test"]  # the step's cached check, then the one connect


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, list[str | None]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for pinned.test only; records each TLS server name (SNI)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=pinned.test",
                    "-addext", "subjectAltName=DNS:pinned.test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    names: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,func-returns-value]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # The handshake happens in the handler thread, whose failure closes the connection; done in accept(),
    # a failed handshake (the client refusing the certificate) would leave the accepted socket unclosed.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1], cert, names
    server.shutdown()
    server.server_close()


def test_tls_keeps_the_name_for_sni_and_certificate_checks(dns: ScriptedDNS,
                                                           tls_server: tuple[int, Path, list[str | None]]) -> None:
    port, cert, names = tls_server
    dns.answers["pinned.test"] = ["127.0.0.1"]
    trust = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(transport=PinnedTransport(verify=trust), timeout=5) as client:
        assert client.get(f"https://pinned.test:{port}/").text == "ok"
        names.clear()
        dns.answers["other.test"] = ["127.0.0.1"]  # same address, a name the certificate does not cover
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            client.get(f"https://other.test:{port}/")
    assert names == ["other.test"]


LINK_LOCAL_FORMS = [
    "169.254.169.254.",  # trailing dot: not an IP literal for ipaddress, and no DNS name either
    "[::a9fe:a9fe]", "[::169.254.169.254]",  # IPv4-compatible
    "[::ffff:0:a9fe:a9fe]",  # IPv4-translated
    "[::ffff:169.254.169.254]",  # IPv4-mapped
    "[64:ff9b::a9fe:a9fe]", "[64:ff9b:1::a9fe:a9fe]", "[64:ff9b:1:a9fe:a9:fe00::]",  # NAT64, both layouts
    "[2002:a9fe:a9fe::1]",  # 6to4
    "[2001:0:4136:e378:8000:63bf:5601:5601]",  # Teredo, client 169.254.169.254 (obfuscated)
    "[2001:0:a9fe:a9fe::1]",  # Teredo, server 169.254.169.254
    "[fe80::1%25eth0]",
]


@pytest.mark.parametrize("host", LINK_LOCAL_FORMS)
def test_every_embedded_ipv4_form_of_link_local_is_refused_by_the_step(host: str) -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200)))
    result = run_flow(_flow("{{ event.url }}", allow_hosts=["*"]), make_event(url=f"http://{host}/latest/"), http=client)
    assert result.status is RunStatus.FAILED and "link-local" in (result.error or ""), result.error
    assert sent == []


@pytest.mark.parametrize("host", LINK_LOCAL_FORMS)
def test_every_embedded_ipv4_form_of_link_local_is_refused_by_the_transport(host: str) -> None:
    """The transport alone (no step check in front of it) refuses the same forms before any socket opens."""
    with httpx.Client(transport=PinnedTransport(), timeout=2) as client, pytest.raises(LinkLocalRefused):
        client.get(f"http://{host}/latest/")


def test_ordinary_addresses_are_not_link_local() -> None:
    for text in ("127.0.0.1", "::1", "10.0.0.1", "2001:db8::1", "64:ff9b::7f00:1", "2002:7f00:1::1", "::ffff:8.8.8.8"):
        assert link_local_refusal(text, [ipaddress.ip_address(text)]) is None, text
    assert embedded_ipv4(ipaddress.ip_address("64:ff9b:1:a9fe:a9:fe00::")) == [
        ipaddress.IPv4Address("0.0.0.0"), ipaddress.IPv4Address("169.254.169.254")]


def test_a_name_that_does_not_resolve_is_a_retryable_connect_error(dns: ScriptedDNS) -> None:
    dns.answers["nxdomain.test"] = []
    with make_http_client(Settings()) as client:
        result = run_flow(_flow("http://nxdomain.test/x"), make_event(), http=client)
    assert result.status is RunStatus.WAITING and "cannot resolve 'nxdomain.test'" in (result.error or "")
    assert dns.asked == ["nxdomain.test", "nxdomain.test"]  # the step's check passed it on; the connect failed it

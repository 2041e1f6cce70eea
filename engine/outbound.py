"""The transport of every outbound request: resolve once, refuse link-local, connect to the address checked.

A check that resolves a name and a connect that resolves it again can get two different answers (DNS
rebinding: 127.0.0.1 for the check, 169.254.169.254 for the connect). So the check happens here, inside
the connect: ``PinnedBackend`` resolves the name once, judges every address it got, and opens the socket
to one of those very addresses. httpcore still sends the name as ``Host`` and as the TLS server name (SNI)
and checks the certificate against it, because only the socket's address changes.

An address is link-local when it is in 169.254.0.0/16 or fe80::/10, or embeds such an IPv4 address in any
IPv6 form a stack or a gateway may turn back into IPv4: IPv4-mapped ``::ffff:a.b.c.d``, IPv4-translated
``::ffff:0:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, 6to4 ``2002:ab:cd::``, NAT64 ``64:ff9b::/96`` and
``64:ff9b:1::/48`` (RFC 6052 layouts), and Teredo (server and client). A name that does not resolve is a
connection error (retryable, like any transient DNS failure): it is never let through unchecked.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_EMBED_LAST_32 = (  # prefixes whose last 32 bits are an IPv4 address
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated, still routed by some stacks)
    ipaddress.ip_network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.ip_network("::ffff:0:0:0/96"),  # IPv4-translated (RFC 2765)
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
    ipaddress.ip_network("64:ff9b:1::/48"),  # NAT64 local-use prefix (RFC 8215), /96-style layout
)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
MAX_ADDRESSES_TRIED = 3  # a name with many addresses: at most this many connects, each with the full timeout


class LinkLocalRefused(httpx.TransportError):
    """The target is, or resolved to, a link-local address: never connected, never retried."""


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address ``address`` carries in a form some stack or gateway turns back into IPv4."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    out: list[ipaddress.IPv4Address] = []
    value = int(address)
    if any(address in net for net in _EMBED_LAST_32):
        out.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _NAT64_LOCAL:  # RFC 6052 /48 layout: bits 48-63 and 72-87 (bits 64-71 are the "u" octet)
        out.append(ipaddress.IPv4Address(((value >> 64) & 0xFFFF) << 16 | (value >> 40) & 0xFFFF))
    if address.sixtofour is not None:
        out.append(address.sixtofour)
    if address.teredo is not None:
        out.extend(address.teredo)
    return out


def link_local_refusal(host: str, addresses: Iterable[Address]) -> str | None:
    """The refusal message when any of ``addresses`` (what ``host`` is or resolved to) is link-local, else None."""
    for address in addresses:
        for candidate in (address, *embedded_ipv4(address)):
            if any(candidate.version == net.version and candidate in net for net in LINK_LOCAL):
                return f"host {host!r} is link-local ({candidate}); requests there are always refused"
    return None


def literal(host: str) -> Address | None:
    """``host`` as an IP address when it is one (brackets, a zone id and one trailing dot allowed), else None."""
    text = host.strip("[]").split("%", 1)[0]
    text = text[:-1] if text.endswith(".") else text
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[Address]:
    """The addresses ``host`` resolves to, in the resolver's order; the seam tests replace to script DNS.

    Raises OSError when it does not resolve (and UnicodeError for a name IDNA cannot encode).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to an address it resolved and judged itself."""

    def __init__(self, resolver: Callable[[str, int], list[Address]] | None = None) -> None:
        self.resolver = resolver
        self.inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        fixed = literal(host)
        if fixed is not None:
            addresses = [fixed]
        else:
            try:
                addresses = (self.resolver or resolve)(host, port)
            except (OSError, UnicodeError) as exc:
                raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
            if not addresses:
                raise httpcore.ConnectError(f"cannot resolve {host!r}: no address")
        refusal = link_local_refusal(host, addresses)
        if refusal is not None:
            raise LinkLocalRefused(refusal)
        error: Exception | None = None
        for address in addresses[:MAX_ADDRESSES_TRIED]:
            try:
                return self.inner.connect_tcp(str(address), port, timeout=timeout, local_address=local_address,
                                              socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not an outbound target")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport on a ``PinnedBackend``; no proxy (a proxy would resolve the name itself)."""

    def __init__(self, *, verify: ssl.SSLContext | bool = True, limits: httpx.Limits | None = None,
                 resolver: Callable[[str, int], list[Address]] | None = None) -> None:
        limits = limits or httpx.Limits()
        super().__init__(verify=verify, limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(resolver),
        )

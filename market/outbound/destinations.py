"""The SSRF guard's first half: where an outgoing webhook may go.

`check_destination` parses a URL, resolves its host once and refuses anything that is not a
global unicast address (unless the operator lists the host in WEBHOOK_ALLOWED_HOSTS); the
transport (transport.py) then connects to exactly the address vetted here, never resolving
again, so a DNS answer that changes in between (DNS rebinding) cannot steer a request inside.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from market.errors import DestinationRefusedError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Special-purpose ranges (IANA registries) a webhook must never reach. Listed explicitly
# instead of trusting only `ipaddress.is_global`, whose answers changed between patch
# releases (3.11.7 calls 224.0.0.1 and fec0::1 global).
_BLOCKED_RANGES = (
    ("unspecified", ("0.0.0.0/8", "::/128")),
    ("loopback", ("127.0.0.0/8", "::1/128")),
    ("private (RFC 1918)", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("private (unique local)", ("fc00::/7",)),
    ("carrier-grade NAT (RFC 6598)", ("100.64.0.0/10",)),
    ("link-local", ("169.254.0.0/16", "fe80::/10")),
    ("site-local", ("fec0::/10",)),
    ("multicast", ("224.0.0.0/4", "ff00::/8")),
    ("reserved (documentation)", ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")),
    ("reserved (documentation)", ("2001:db8::/32", "3fff::/20")),
    ("reserved", ("192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15", "240.0.0.0/4")),
    # ::/8 holds the IPv4-compatible forms, 2001::/23 Teredo, 2002::/16 6to4 tunnels.
    ("reserved", ("::/8", "64:ff9b:1::/48", "100::/64", "2001::/23", "2002::/16", "5f00::/16")),
)
_BLOCKED_NETWORKS = tuple(
    (ipaddress.ip_network(net), why) for why, nets in _BLOCKED_RANGES for net in nets
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class ResolvedDestination:
    """Where a webhook may go: the URL's scheme, host and port, and the vetted address(es)."""

    scheme: str
    host: str
    port: int
    address: str
    # Every vetted address in resolver order; `address` is the first. `deliver` tries them in
    # turn so one unreachable address family does not fail the delivery.
    addresses: tuple[str, ...] = ()
    target: str = "/"


def is_public_address(ip: IPAddress) -> bool:
    """Tell whether `ip` is global unicast, the only kind of address a webhook may reach."""
    return _why_not_public(ip) is None


def check_destination(url: str, *, allowed_hosts: frozenset[str]) -> ResolvedDestination:
    """Resolve `url`'s host once and return it; raise DestinationRefusedError if not allowed."""
    try:
        return vet_url(url, allowed_hosts)
    except OSError as exc:
        raise DestinationRefusedError(str(exc)) from exc


def vet_url(url: str, allowed_hosts: Iterable[str]) -> ResolvedDestination:
    """Parse, resolve once and vet `url`; DestinationRefusedError, or OSError if unresolvable."""
    scheme, host, port, target = _parse(url)
    try:
        addresses = _resolve(host, port)
    except OSError as exc:
        raise OSError(f"cannot resolve host {host!r}: {exc}") from exc
    return _vet(scheme, host, port, target, addresses, allowed_hosts)


def _parse(url: str) -> tuple[str, str, int, str]:
    """Split `url` into scheme, ASCII host, port and request target, refusing unusable URLs."""
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise DestinationRefusedError("the URL contains whitespace or control characters")
    try:
        # Python checks a bracketed host is an IPv6 address (`http://[1:2:3]/` is not one).
        parts = urlsplit(url)
    except ValueError as exc:
        raise DestinationRefusedError(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DestinationRefusedError(f"scheme {scheme or '(none)'!r} is not http or https")
    if parts.username is not None or parts.password is not None:
        raise DestinationRefusedError("credentials in the URL are not supported")
    host = parts.hostname
    if not host:
        raise DestinationRefusedError("the URL has no host")
    try:
        port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationRefusedError(f"invalid port: {exc}") from exc
    if port == 0:
        raise DestinationRefusedError("port 0 cannot be connected to")
    if not _is_ip_literal(host):
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise DestinationRefusedError(f"invalid host name {host!r}") from exc
    path = parts.path or "/"
    target = path + (f"?{parts.query}" if parts.query else "")
    # Percent-encode what HTTP/1.1 cannot carry (non-ASCII); existing escapes stay as they are.
    return scheme, host, port, quote(target, safe="/?[]@!$&'()*+,;=%:~")


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Return the addresses `host` stands for, resolving names once with getaddrinfo."""
    if _is_ip_literal(host):
        return [ipaddress.ip_address(host)]
    found: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    ):
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(sockaddr[0])
            if ip not in found:
                found.append(ip)
    return found


def _vet(
    scheme: str,
    host: str,
    port: int,
    target: str,
    addresses: list[IPAddress],
    allowed_hosts: Iterable[str],
) -> ResolvedDestination:
    """Return the destination if every address may be reached; raise DestinationRefusedError."""
    if not addresses:
        raise DestinationRefusedError(f"host {host!r} resolves to no address")
    # Exact host names only: an allowed "localhost" must not let "127.0.0.1" (or "127.1") in.
    if host not in {h.lower() for h in allowed_hosts}:
        for ip in addresses:
            why = _why_not_public(ip)
            if why is not None:
                # Refuse if *any* answer is inside: the client might pick it on another day.
                raise DestinationRefusedError(
                    f"host {host!r} resolves to {ip}, which is {why}; "
                    "add the host to WEBHOOK_ALLOWED_HOSTS to allow it"
                )
    texts = tuple(str(ip) for ip in addresses)
    return ResolvedDestination(scheme, host, port, texts[0], texts, target)


def _why_not_public(ip: IPAddress) -> str | None:
    """Name the special-purpose range `ip` belongs to, or None for a global unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            why = _why_not_public(ip.ipv4_mapped)
            return f"IPv4-mapped {why}" if why else None
        if ip in _NAT64:
            # DNS64 networks synthesise these for IPv4-only hosts: judge the IPv4 inside.
            why = _why_not_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
            return f"NAT64 of {why}" if why else None
    for network, why in _BLOCKED_NETWORKS:
        if ip.version == network.version and ip in network:
            return why
    if not ip.is_global:
        return "not globally routable"
    return None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

"""Where webhook deliveries may go: the public internet only, unless the operator says so.

A webhook URL is chosen by an admin, but the request is sent from inside the deployment: without
a check, ``http://169.254.169.254/…`` or ``http://10.0.0.5:5432`` would let whoever can register
an endpoint probe the private network (server-side request forgery). So, unless
``QUESTLINE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES`` is true (``questline dev`` and the tests, whose
receivers run on 127.0.0.1):

- registration refuses ``localhost`` and IP literals that are not public (``INVALID_INPUT``);
- each delivery resolves the host itself, refuses it if ANY of its addresses is not public,
  and then connects to the address it checked (the request keeps the original ``Host`` header
  and, for https, the TLS server name, so certificates are verified for the host name; the
  connection is not kept for another request). A
  name that resolved to a public address at registration and to a private one later (DNS
  rebinding) is refused at that later delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


class AddressRefused(Exception):
    """The URL's host is, or resolves to, an address deliveries may not go to."""


def is_public(address: str) -> bool:
    """Whether ``address`` is a globally routable unicast IP (not private, loopback,
    link-local, shared, reserved, multicast or unspecified; IPv4-mapped IPv6 included)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def literal_refusal(url: str) -> str | None:
    """Why ``url`` may not be registered (its host is ``localhost`` or a non-public IP
    literal), or None. Host names are checked again at each delivery."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is not a public address"
    try:
        public = is_public(host)
    except ValueError:
        return None  # a host name: resolved and checked when delivering
    return None if public else f"{host} is not a public address"


@dataclass(frozen=True)
class Target:
    """Where to send a delivery: the URL with the checked address in place of the host name,
    plus the headers and request extensions that keep the host name visible to the receiver."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


async def pinned_target(url: str) -> Target:
    """Resolve ``url``'s host, refuse it unless every address is public, and pin the request
    to the first one (see the module docstring). Raises ``AddressRefused``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise AddressRefused(f"cannot resolve {host}: {error}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [address for address in addresses if not is_public(address)]
    if not addresses or refused:
        shown = refused[0] if refused else "nothing"
        raise AddressRefused(f"{host} resolves to {shown}, not a public address")
    address = addresses[0]
    literal = f"[{address}]" if ":" in address else address
    pinned = SplitResult(
        parts.scheme, f"{literal}:{port}", parts.path, parts.query, parts.fragment
    ).geturl()
    named = f"[{host}]" if ":" in host else host
    host_header = named if parts.port is None else f"{named}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    # The HTTP client pools connections by address: two host names on one address must not
    # share a connection (the second would skip its own certificate check), so a pinned
    # request never leaves one behind.
    return Target(pinned, {"Host": host_header, "Connection": "close"}, extensions)

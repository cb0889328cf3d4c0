"""Which network addresses an endpoint may point at.

An endpoint URL is typed in by a user, so pegabridge must not become a way to reach
what sits behind it: private networks, link-local addresses and the metadata service
of a cloud machine (169.254.169.254 and its cousins). An address of those kinds is
refused unless the operator lists its range in ``PEGABRIDGE_ENDPOINT_ALLOWED_RANGES``.
Loopback stays allowed (``PEGABRIDGE_ENDPOINT_ALLOW_LOOPBACK``) so that a trial can use
the sandbox endpoint on the same machine.

The check runs when an endpoint is saved or tested, and again each time the delivery
client resolves the name, so a DNS answer that changes later cannot get around it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pegabridge.config import Settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services of cloud machines; most are link-local already, not all.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)

# Shared address space (RFC 6598) is not flagged private by ``ipaddress``.
_CARRIER_NAT = ipaddress.ip_network("100.64.0.0/10")


class EndpointRefused(ValueError):
    """An endpoint points at an address that is not allowed; the message says why."""


@dataclass(frozen=True)
class EndpointGuard:
    """The address policy of this process."""

    allowed: tuple[IpNetwork, ...] = ()
    allow_loopback: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> EndpointGuard:
        """The policy configured in ``settings``."""
        return cls(
            allowed=parse_ranges(settings.endpoint_allowed_ranges),
            allow_loopback=settings.endpoint_allow_loopback,
        )

    def refusal(self, address: IpAddress) -> str | None:
        """Why ``address`` may not be used, or ``None`` when it may."""
        address = _unmapped(address)
        if any(address in network for network in self.allowed):
            return None
        if address.is_loopback:
            return None if self.allow_loopback else "a loopback address"
        if address in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if address.is_link_local:
            return "a link-local address"
        if address.is_unspecified or address.is_multicast or address.is_reserved:
            return "an address that is not a host on the internet"
        if address.is_private or address in _CARRIER_NAT:
            return "a private network address"
        return None

    def check_addresses(self, host: str, addresses: Iterable[str]) -> None:
        """Refuse when any address ``host`` resolved to is not allowed."""
        for text in addresses:
            try:
                address = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                raise EndpointRefused(
                    f"{host} resolved to {text!r}, which is not an IP address"
                ) from None
            why = self.refusal(address)
            if why is not None:
                raise EndpointRefused(
                    f"{host} points to {address}, {why}; such endpoints are refused "
                    "unless the operator allows the range in "
                    "PEGABRIDGE_ENDPOINT_ALLOWED_RANGES"
                )

    def check_literal(self, url: str) -> None:
        """Refuse a URL whose host is an IP address that is not allowed.

        Names are left alone: they are checked when they are resolved.
        """
        host = (urlsplit(url).hostname or "").strip("[]")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return
        self.check_addresses(host, [str(address)])

    async def check_url(self, url: str) -> None:
        """Resolve the URL's host and refuse it when an address is not allowed.

        Raises :class:`EndpointRefused`, or :class:`socket.gaierror` when the name does
        not resolve.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.check_addresses(host, await resolve(host, port))


def parse_ranges(text: str) -> tuple[IpNetwork, ...]:
    """Comma- or space-separated CIDR ranges; a bad one is refused with its text."""
    networks = []
    for part in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"PEGABRIDGE_ENDPOINT_ALLOWED_RANGES: {part!r} is not a range such as "
                "10.20.0.0/16"
            ) from None
    return tuple(networks)


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` (an IP literal resolves to itself)."""
    literal = host.strip("[]")
    try:
        return [str(ipaddress.ip_address(literal))]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM
    )
    return sorted({str(info[4][0]) for info in infos})


def _unmapped(address: IpAddress) -> IpAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address

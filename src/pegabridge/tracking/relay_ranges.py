"""Address ranges: Apple's private relay egress list and link scanners' networks.

A range file holds one entry per line: a CIDR block (`104.28.28.0/26`) or a single
address (meaning /32 or /128). Apple's own feed is a CSV whose first column is the CIDR
(`https://mask-api.icloud.com/egress-ip-ranges.csv`, IPv4 and IPv6); it is read the same
way. Empty lines and lines starting with `#` are skipped.

Lookups turn each network into an integer interval, merge overlapping intervals, and
bisect: a lookup is one `ipaddress` parse plus a binary search.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx

logger = logging.getLogger(__name__)

RANGES_PATH_ENV: Final = "PEGABRIDGE_APPLE_RELAY_RANGES"
"""Environment variable naming the Apple relay range file the product uses."""

APPLE_RELAY_FEED_URL: Final = "https://mask-api.icloud.com/egress-ip-ranges.csv"
"""Apple's published list of iCloud Private Relay egress ranges."""

FETCH_TIMEOUT_S: Final = 60.0


class RelayRangesError(Exception):
    """A range list could not be read, fetched or written."""


@dataclass(frozen=True, slots=True)
class _Intervals:
    """Disjoint, sorted, closed integer intervals of one address family."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def contains(self, value: int) -> bool:
        index = bisect.bisect_right(self.starts, value) - 1
        return index >= 0 and value <= self.ends[index]


class AddressRanges:
    """An immutable set of IPv4 and IPv6 networks answering "is this address inside"."""

    def __init__(
        self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
    ):
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for network in networks:
            target = v4 if network.version == 4 else v6
            target.append(
                (int(network.network_address), int(network.broadcast_address))
            )

        self._v4 = _merge(v4)
        self._v6 = _merge(v6)

    def __len__(self) -> int:
        """Number of disjoint intervals after merging."""
        return len(self._v4.starts) + len(self._v6.starts)

    def __contains__(self, address: object) -> bool:
        return isinstance(address, str) and self.contains(address)

    def contains(self, address: str) -> bool:
        """Whether `address` (IPv4 or IPv6 text) lies in one of the networks.

        An address that does not parse is not inside; an IPv4-mapped IPv6 address
        (`::ffff:1.2.3.4`) is looked up as its IPv4 address.
        """
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            return False

        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
            parsed = parsed.ipv4_mapped
        intervals = self._v4 if parsed.version == 4 else self._v6
        return intervals.contains(int(parsed))

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The merged networks as CIDR blocks, IPv4 first, in address order."""
        result: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        pairs = (
            (ipaddress.IPv4Address, self._v4),
            (ipaddress.IPv6Address, self._v6),
        )
        for address_type, intervals in pairs:
            for start, end in zip(intervals.starts, intervals.ends, strict=True):
                result.extend(
                    ipaddress.summarize_address_range(
                        address_type(start), address_type(end)
                    )
                )
        return result


def _merge(pairs: list[tuple[int, int]]) -> _Intervals:
    pairs.sort()
    starts: list[int] = []
    ends: list[int] = []
    for start, end in pairs:
        if ends and start <= ends[-1] + 1:
            ends[-1] = max(ends[-1], end)
            continue
        starts.append(start)
        ends.append(end)
    return _Intervals(starts=tuple(starts), ends=tuple(ends))


def parse_ranges(text: str, *, source: str = "<text>") -> AddressRanges:
    """Read a range list (plain lines or Apple's CSV) from `text`.

    Raises `RelayRangesError` naming the source and line of the first entry that is not
    an address or a network.
    """
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        entry = line.split(",", 1)[0].strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise RelayRangesError(
                f"{source}:{line_number}: {entry!r} is not an IP network; "
                "expected a CIDR block or an address per line"
            ) from exc

    return AddressRanges(networks)


def load_ranges(path: Path) -> AddressRanges:
    """Read the range list in the file at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RelayRangesError(f"cannot read range file {path}: {exc}") from exc

    return parse_ranges(text, source=str(path))


def fetch_ranges_text(url: str, *, client: httpx.Client | None = None) -> str:
    """Download a range list from `url` and return its text."""
    try:
        if client is None:
            with httpx.Client(timeout=FETCH_TIMEOUT_S, follow_redirects=True) as own:
                response = own.get(url)
        else:
            response = client.get(url)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise RelayRangesError(f"cannot fetch range list from {url}: {exc}") from exc

    return response.text


def load_ranges_from_url(
    url: str, *, client: httpx.Client | None = None
) -> AddressRanges:
    """Download and parse the range list at `url`."""
    return parse_ranges(fetch_ranges_text(url, client=client), source=url)


def refresh_ranges_file(
    path: Path, url: str = APPLE_RELAY_FEED_URL, *, client: httpx.Client | None = None
) -> AddressRanges:
    """Replace the range file at `path` with the list now published at `url`.

    The download is parsed before anything is written, and an empty list is refused, so
    a broken download never replaces a good file. The new file is written next to the
    old one and renamed over it: a reader sees the old file or the new one, never half.
    It holds one merged CIDR block per line, under a comment naming the source.
    """
    ranges = load_ranges_from_url(url, client=client)
    if len(ranges) == 0:
        raise RelayRangesError(f"the range list at {url} holds no network; kept {path}")

    fetched_at = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [f"# source: {url}", f"# fetched: {fetched_at}"]
    lines.extend(str(network) for network in ranges.networks())
    _write_atomically(path, "\n".join(lines) + "\n")

    logger.info(
        "relay ranges refreshed",
        extra={
            "event": "relay_ranges.refreshed",
            "path": str(path),
            "url": url,
            "intervals": len(ranges),
        },
    )
    return ranges


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise RelayRangesError(f"cannot write range file {path}: {exc}") from exc


def configured_ranges_path(environ: Mapping[str, str] | None = None) -> Path | None:
    """The Apple relay range file named by `PEGABRIDGE_APPLE_RELAY_RANGES`, if any."""
    value = (os.environ if environ is None else environ).get(RANGES_PATH_ENV, "")
    return Path(value) if value.strip() else None


def load_configured_ranges(
    environ: Mapping[str, str] | None = None,
) -> AddressRanges | None:
    """Load the configured Apple relay ranges, or None when the rule must stay off.

    No configured path, or a path with no file, switches the Apple relay rule off; a log
    line (event key `relay_ranges.off`) says so. A file that exists but cannot be read
    raises `RelayRangesError`, since that is a deployment mistake to fix.
    """
    path = configured_ranges_path(environ)
    if path is None or not path.is_file():
        logger.warning(
            "apple relay range rule is off",
            extra={
                "event": "relay_ranges.off",
                "env": RANGES_PATH_ENV,
                "path": "" if path is None else str(path),
                "cause": "not configured" if path is None else "no such file",
                "fix": f"set {RANGES_PATH_ENV} to a file and run "
                "'pegabridge agents refresh-ranges' to fill it",
            },
        )
        return None

    ranges = load_ranges(path)
    logger.info(
        "apple relay ranges loaded",
        extra={
            "event": "relay_ranges.loaded",
            "path": str(path),
            "intervals": len(ranges),
        },
    )
    return ranges

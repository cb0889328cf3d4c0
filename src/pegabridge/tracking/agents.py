"""User-agent classification: the `os` and `browser` fields of opens and clicks.

ua-parser 1.x does the parsing; this module only turns its family names into the names
the interaction format shows (`Internet explorer`, `Outlook`, `""` for unknown), and
refuses to report an image proxy as the browser it pretends to be. Results are cached on
the raw header, since the same few hundred agents make up almost all traffic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import ua_parser

MAX_PARSED_LENGTH: Final = 1024
"""Characters of a User-Agent given to the parser; the raw header is kept whole."""

CACHE_SIZE: Final = 4096
"""Distinct user agents whose classification is kept in memory."""

UNKNOWN_FAMILY: Final = "Other"
"""ua-parser's family for an agent it does not recognise."""

# ua-parser family -> our name. Anything not listed passes through unchanged; this is
# the one place where names are changed, so the interaction format stays predictable.
BROWSER_NAMES: Final[dict[str, str]] = {
    "Other": "",
    "IE": "Internet explorer",
    "IE Large Screen": "Internet explorer",
    "IE Mobile": "Internet explorer mobile",
    "MacOutlook": "Outlook",
    "Outlook-iOS": "Outlook",
    "Outlook-iOS-Android": "Outlook",
    "GmailImageProxy": "Gmail",
    "YahooMailProxy": "Yahoo Mail",
}
OS_NAMES: Final[dict[str, str]] = {
    "Other": "",
}

# Image proxies fetch pictures on behalf of a webmail reader. Their User-Agent imitates
# a desktop browser (Gmail's claims Firefox 11 on Windows XP), so the os they claim is
# not the reader's: it is reported as unknown. The key is ua-parser's family; the
# substrings catch the same proxies should a future regex release rename them.
IMAGE_PROXY_FAMILIES: Final = frozenset({"GmailImageProxy", "YahooMailProxy"})
IMAGE_PROXY_MARKERS: Final[tuple[tuple[str, str], ...]] = (
    ("GoogleImageProxy", "GmailImageProxy"),
    ("YahooMailProxy", "YahooMailProxy"),
)


@dataclass(frozen=True, slots=True)
class RawFamilies:
    """ua-parser's own family names for one agent (`Other` when not recognised)."""

    browser: str
    os: str


@dataclass(frozen=True, slots=True)
class Agent:
    """The agent fields of an event, with names as the interaction format shows them.

    `browser` and `os` are `""` when unknown. `image_proxy` is true for a webmail image
    proxy (Gmail, Yahoo), whose fetch stands for a real open by the reader.
    """

    browser: str
    os: str
    image_proxy: bool


def raw_families(user_agent: str) -> RawFamilies:
    """Parse `user_agent` with ua-parser and return its family names unchanged.

    Only the first `MAX_PARSED_LENGTH` characters are parsed, so a 10 kB header costs no
    more than a normal one.
    """
    text = user_agent[:MAX_PARSED_LENGTH]
    domains = ua_parser.Domain.USER_AGENT | ua_parser.Domain.OS
    try:
        result = ua_parser.parser(text, domains)
    except UnicodeEncodeError:
        # The regex engine needs valid UTF-8; lone surrogates become U+FFFD.
        clean = text.encode("utf-8", "replace").decode("utf-8")
        result = ua_parser.parser(clean, domains)

    browser = result.user_agent.family if result.user_agent else UNKNOWN_FAMILY
    os_family = result.os.family if result.os else UNKNOWN_FAMILY
    return RawFamilies(browser=browser, os=os_family)


def classify_agent(user_agent: str) -> Agent:
    """Return the `browser` and `os` of `user_agent` as the event format names them.

    Never raises on odd input; an empty or unknown agent gives `""` for both names.
    Only the first `MAX_PARSED_LENGTH` characters count, and results are cached on
    them (LRU), so huge or endless distinct headers cannot fill the memory.
    """
    return _classify_head(user_agent[:MAX_PARSED_LENGTH])


@functools.lru_cache(maxsize=CACHE_SIZE)
def _classify_head(head: str) -> Agent:
    raw = raw_families(head)
    proxy_family = _image_proxy_family(head, raw.browser)
    if proxy_family is not None:
        return Agent(browser=browser_name(proxy_family), os="", image_proxy=True)

    return Agent(
        browser=browser_name(raw.browser), os=os_name(raw.os), image_proxy=False
    )


@dataclass(frozen=True, slots=True)
class CacheStats:
    """How the classification cache has served so far."""

    hits: int
    misses: int
    size: int


def agent_cache_stats() -> CacheStats:
    """Hits, misses and current size of the classification cache."""
    info = _classify_head.cache_info()
    return CacheStats(hits=info.hits, misses=info.misses, size=info.currsize)


def clear_agent_cache() -> None:
    """Empty the classification cache (for benchmarks and tests)."""
    _classify_head.cache_clear()


def browser_name(family: str) -> str:
    """Our name for ua-parser's browser `family`."""
    return BROWSER_NAMES.get(family, family)


def os_name(family: str) -> str:
    """Our name for ua-parser's os `family`."""
    return OS_NAMES.get(family, family)


def _image_proxy_family(head: str, browser_family: str) -> str | None:
    if browser_family in IMAGE_PROXY_FAMILIES:
        return browser_family

    for marker, family in IMAGE_PROXY_MARKERS:
        if marker in head:
            return family
    return None

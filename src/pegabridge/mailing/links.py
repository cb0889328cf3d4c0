"""Tracked links: finding the links of a rendered email and rewriting them.

A link of the HTML part is an ``<a href="http(s)://...">``. Its settings come from
attributes that are removed from the email:

- ``data-pb-alt``: the description (else the ``title``, else the link's text);
- ``data-pb-tags``: comma-separated tags;
- ``data-pb-utm-source``, ``-medium``, ``-term``, ``-content``, ``-campaign``;
- ``data-pb-track="no"``: leave this link untracked.

Bare ``http(s)://`` URLs of the text part are tracked too. Links already pointing at
this deployment's tracking paths (short links, the unsubscribe page) are kept as
written. Each distinct (kind, URL, settings) of a content is one row of ``links``; the
URL is stored exactly as the email had it (HTML entities decoded), so the redirect
sends the customer to that destination byte for byte.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pegabridge.store.tables import links
from pegabridge.store.writer import GroupCommitter

UTM_NAMES = ("source", "medium", "term", "content", "campaign")
MAX_ALT_CHARS = 200

_ANCHOR = re.compile(r"<a\b([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_ATTRIBUTE = re.compile(
    r"""([^\s"'<>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""",
)
_TAGS = re.compile(r"<[^>]*>")
_TEXT_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?)]}'\""


@dataclass(frozen=True)
class LinkSpec:
    """What identifies a link of a content: its kind, destination and settings."""

    kind: str  # click or short
    url: str
    alt: str = ""
    tags: tuple[str, ...] = ()
    utm: tuple[tuple[str, str], ...] = ()

    def utm_json(self) -> str:
        """The UTM settings as stored: ``{"google_source": ...}``, set values only."""
        return json.dumps({f"google_{k}": v for k, v in self.utm}, ensure_ascii=False)


@dataclass(frozen=True)
class _Anchor:
    start: int
    end: int
    attributes: str
    inner: str
    spec: LinkSpec | None


def is_trackable(url: str, tracking_base: str) -> bool:
    """Whether ``url`` is a web link that is not already one of our tracked links."""
    lowered = url[:8].lower()
    if not (lowered.startswith("http://") or lowered.startswith("https://")):
        return False
    return not url.startswith(tracking_base)


def html_link_specs(body: str, tracking_base: str) -> list[LinkSpec]:
    """The tracked links of an HTML part, in order of appearance."""
    return [a.spec for a in _anchors(body, tracking_base) if a.spec is not None]


def text_link_specs(body: str, tracking_base: str) -> list[LinkSpec]:
    """The tracked links (bare URLs) of a text part."""
    found = []
    for match in _TEXT_URL.finditer(body):
        url = match.group(0).rstrip(_TRAILING)
        if is_trackable(url, tracking_base):
            found.append(LinkSpec("click", url))
    return found


def rewrite_html(
    body: str,
    tracking_base: str,
    url_for: Callable[[LinkSpec], str],
    track: bool = True,
) -> str:
    """The HTML part with each tracked link's ``href`` replaced by ``url_for(spec)``.

    Our ``data-pb-*`` attributes are removed in any case; with ``track`` off the
    destinations stay as written.
    """
    out: list[str] = []
    position = 0
    for anchor in _anchors(body, tracking_base):
        out.append(body[position : anchor.start])
        attributes = anchor.attributes
        if anchor.spec is not None and track:
            attributes = _replace_href(attributes, url_for(anchor.spec))
        out.append(f"<a{_drop_our_attributes(attributes)}>{anchor.inner}</a>")
        position = anchor.end
    out.append(body[position:])
    return "".join(out)


def rewrite_text(
    body: str, tracking_base: str, url_for: Callable[[LinkSpec], str]
) -> str:
    """The text part with each bare tracked URL replaced by ``url_for(spec)``."""

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        url = whole.rstrip(_TRAILING)
        if not is_trackable(url, tracking_base):
            return whole
        return url_for(LinkSpec("click", url)) + whole[len(url) :]

    return _TEXT_URL.sub(replace, body)


def _anchors(body: str, tracking_base: str) -> Iterable[_Anchor]:
    if "<a" not in body and "<A" not in body:
        return
    for match in _ANCHOR.finditer(body):
        attributes, inner = match.group(1), match.group(2)
        yield _Anchor(
            match.start(),
            match.end(),
            attributes,
            inner,
            _spec_of(attributes, inner, tracking_base),
        )


@functools.lru_cache(maxsize=4096)
def _spec_of(attributes: str, inner: str, tracking_base: str) -> LinkSpec | None:
    # Cached: a content's anchors repeat in every email of a send.
    values = _attribute_values(attributes)
    url = html.unescape(values.get("href", "").strip())
    if not url or not is_trackable(url, tracking_base):
        return None
    if values.get("data-pb-track", "").strip().lower() in ("no", "false", "off"):
        return None

    alt = values.get("data-pb-alt") or values.get("title") or _text_of(inner)
    tags = tuple(
        t.strip() for t in html.unescape(values.get("data-pb-tags", "")).split(",")
    )
    utm = tuple(
        (name, html.unescape(values[f"data-pb-utm-{name}"]).strip())
        for name in UTM_NAMES
        if values.get(f"data-pb-utm-{name}", "").strip()
    )
    return LinkSpec(
        "click",
        url,
        html.unescape(alt).strip()[:MAX_ALT_CHARS],
        tuple(t for t in tags if t),
        utm,
    )


def _attribute_values(attributes: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for match in _ATTRIBUTE.finditer(attributes):
        name = match.group(1).lower()
        value = next((g for g in match.groups()[1:] if g is not None), "")
        values.setdefault(name, value)
    return values


def _replace_href(attributes: str, url: str) -> str:
    escaped = html.escape(url, quote=True)
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() == "href":
            before, after = attributes[: match.start()], attributes[match.end() :]
            return f'{before}href="{escaped}"{after}'
    return attributes


def _drop_our_attributes(attributes: str) -> str:
    if "data-pb-" not in attributes.lower():
        return attributes
    kept = []
    position = 0
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower().startswith("data-pb-"):
            kept.append(attributes[position : match.start()].rstrip())
            position = match.end()
    kept.append(attributes[position:])
    return "".join(kept)


def _text_of(inner: str) -> str:
    return " ".join(_TAGS.sub(" ", inner).split())


class LinkRegistry:
    """The ``links`` rows of contents, made on first use and then kept in memory.

    Two processes may make a row for the same link at the same time; both rows work
    (a redirect only needs its own row), so no lock is taken.
    """

    def __init__(self, db: AsyncEngine, committer: GroupCommitter) -> None:
        self._db = db
        self._committer = committer
        self._ids: dict[tuple[int, LinkSpec], int] = {}
        self._loaded: set[int] = set()
        self._lock = asyncio.Lock()

    def id_of(self, content_id: int, spec: LinkSpec) -> int:
        """The id of a link already ensured; ``KeyError`` otherwise."""
        return self._ids[(content_id, spec)]

    async def ensure(
        self, portal_id: int, content_id: int, specs: list[LinkSpec]
    ) -> None:
        """Make sure every link of ``specs`` has a row; loads a content's rows once."""
        if content_id in self._loaded and all(
            (content_id, s) in self._ids for s in specs
        ):
            return

        # One task at a time loads or inserts, so concurrent renders of one content
        # neither load it twice nor insert the same link twice.
        async with self._lock:
            if content_id not in self._loaded:
                await self._load(content_id)
            missing = {s for s in specs if (content_id, s) not in self._ids}
            if not missing:
                return
            ordered = sorted(missing, key=lambda s: (s.kind, s.url, s.alt))
            ids = await self._committer.run(
                lambda conn: _insert(conn, portal_id, content_id, ordered)
            )
            for spec, link_id in zip(ordered, ids, strict=True):
                self._ids[(content_id, spec)] = link_id

    async def _load(self, content_id: int) -> None:
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(links).where(links.c.content_id == content_id)
            )
            for row in rows:
                spec = _spec_of_row(row._mapping)
                self._ids.setdefault((content_id, spec), int(row.id))
        self._loaded.add(content_id)


async def _insert(
    conn: AsyncConnection, portal_id: int, content_id: int, specs: list[LinkSpec]
) -> list[int]:
    now = time.time()
    ids = []
    for spec in specs:
        result = await conn.execute(
            links.insert()
            .values(
                portal_id=portal_id,
                content_id=content_id,
                kind=spec.kind,
                url=spec.url,
                alt=spec.alt,
                tags=json.dumps(list(spec.tags), ensure_ascii=False),
                utm=spec.utm_json(),
                created_at=now,
            )
            .returning(links.c.id)
        )
        ids.append(int(result.scalar_one()))
    return ids


def _spec_of_row(row: object) -> LinkSpec:
    values = dict(row)  # type: ignore[call-overload]
    utm = json.loads(values["utm"] or "{}")
    return LinkSpec(
        values["kind"],
        values["url"],
        values["alt"],
        tuple(json.loads(values["tags"] or "[]")),
        tuple(
            (name, utm[f"google_{name}"])
            for name in UTM_NAMES
            if f"google_{name}" in utm
        ),
    )

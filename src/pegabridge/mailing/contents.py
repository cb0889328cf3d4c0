"""Contents: the email templates of a brand, with their manual variables.

A content is checked when it is saved (see :mod:`pegabridge.mailing.templates`): a
template that does not compile or does not render with its defaults is refused with
every problem, its part and line, and nothing is stored.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.events.models import ManualValue
from pegabridge.mailing.errors import MailingError, NotFound
from pegabridge.mailing.mime import normalise_from
from pegabridge.mailing.templates import (
    CompiledContent,
    TemplateInvalid,
    check_content,
    compile_content,
)
from pegabridge.store.tables import contents


@dataclass(frozen=True)
class Content:
    """One content as stored."""

    id: int
    portal_id: int
    brand_id: int
    name: str
    subject: str
    html: str
    text: str
    variables: dict[str, ManualValue]
    from_address: str
    updated_at: float

    def as_json(self) -> dict[str, Any]:
        """The content as the API shows it."""
        return {
            "id": self.id,
            "brand_id": self.brand_id,
            "name": self.name,
            "subject": self.subject,
            "html": self.html,
            "text": self.text,
            "variables": self.variables,
            "from_address": self.from_address,
        }


@dataclass
class ContentInput:
    """Values of a content to save; ``None`` keeps the stored value on update."""

    name: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    variables: dict[str, ManualValue] | None = None
    from_address: str | None = None


class ContentInvalid(MailingError):
    """A content whose templates have errors; ``problems`` lists them."""

    def __init__(self, exc: TemplateInvalid) -> None:
        super().__init__(f"the content has template errors: {exc}", "template")
        self.problems = exc.problems


def content_of_row(row: Any) -> Content:
    """A :class:`Content` from a row of ``contents``."""
    m = row._mapping
    return Content(
        id=int(m["id"]),
        portal_id=int(m["portal_id"]),
        brand_id=int(m["brand_id"]),
        name=m["name"],
        subject=m["subject"],
        html=m["html"],
        text=m["text"],
        variables=json.loads(m["variables"] or "{}"),
        from_address=m["from_address"],
        updated_at=float(m["updated_at"]),
    )


async def get_content(
    conn: AsyncConnection, portal_id: int, brand_id: int, content_id: int
) -> Content:
    """The content ``content_id`` of the brand; :class:`NotFound` otherwise."""
    row = (
        await conn.execute(
            select(contents).where(
                and_(
                    contents.c.portal_id == portal_id,
                    contents.c.brand_id == brand_id,
                    contents.c.id == content_id,
                )
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"brand {brand_id} has no content {content_id}", "content_id")
    return content_of_row(row)


def _validated(values: ContentInput, current: Content | None) -> dict[str, Any]:
    merged: dict[str, Any] = {
        "name": values.name
        if values.name is not None
        else getattr(current, "name", ""),
        "subject": _pick(values.subject, current, "subject"),
        "html": _pick(values.html, current, "html"),
        "text": _pick(values.text, current, "text"),
        "variables": values.variables
        if values.variables is not None
        else getattr(current, "variables", {}),
        "from_address": _pick(values.from_address, current, "from_address").strip(),
    }
    if not str(merged["name"]).strip():
        raise MailingError("a content needs a name", "name")
    for name, value in merged["variables"].items():
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise MailingError(
                f"the default of {name!r} must be text, a number, true/false or null",
                "variables",
            )
    if merged["from_address"]:
        try:
            normalise_from(merged["from_address"])
        except ValueError as exc:
            raise MailingError(str(exc), "from_address") from exc
    try:
        check_content(
            merged["subject"], merged["html"], merged["text"], merged["variables"]
        )
    except TemplateInvalid as exc:
        raise ContentInvalid(exc) from exc
    return merged


def check_new_content(values: ContentInput) -> None:
    """Refuse a new content with errors before any transaction is opened."""
    _validated(values, None)


def _pick(value: str | None, current: Content | None, name: str) -> str:
    if value is not None:
        return value
    return str(getattr(current, name, ""))


async def create_content(
    conn: AsyncConnection, portal_id: int, brand_id: int, values: ContentInput
) -> Content:
    """Check and store a new content."""
    merged = _validated(values, None)
    now = time.time()
    result = await conn.execute(
        contents.insert()
        .values(
            portal_id=portal_id,
            brand_id=brand_id,
            name=merged["name"].strip(),
            subject=merged["subject"],
            html=merged["html"],
            text=merged["text"],
            variables=json.dumps(merged["variables"], ensure_ascii=False),
            from_address=merged["from_address"],
            created_at=now,
            updated_at=now,
        )
        .returning(contents.c.id)
    )
    return await get_content(conn, portal_id, brand_id, int(result.scalar_one()))


async def update_content(
    conn: AsyncConnection,
    portal_id: int,
    brand_id: int,
    content_id: int,
    values: ContentInput,
) -> Content:
    """Check and store changes of a content; a refused change stores nothing."""
    current = await get_content(conn, portal_id, brand_id, content_id)
    merged = _validated(values, current)
    await conn.execute(
        update(contents)
        .where(contents.c.id == content_id)
        .values(
            name=merged["name"].strip(),
            subject=merged["subject"],
            html=merged["html"],
            text=merged["text"],
            variables=json.dumps(merged["variables"], ensure_ascii=False),
            from_address=merged["from_address"],
            updated_at=time.time(),
        )
    )
    return await get_content(conn, portal_id, brand_id, content_id)


class CompiledCache:
    """Compiled templates by content and version, so a bulk send compiles once."""

    def __init__(self) -> None:
        self._compiled: dict[tuple[int, float], CompiledContent] = {}

    def get(self, content: Content) -> CompiledContent:
        """The compiled templates of ``content`` as it is now."""
        key = (content.id, content.updated_at)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = compile_content(content.subject, content.html, content.text)
            self._compiled = {
                k: v for k, v in self._compiled.items() if k[0] != content.id
            }
            self._compiled[key] = compiled
        return compiled

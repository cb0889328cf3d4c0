"""Tracking over real HTTP: pixels, redirects, unsubscribes and conversions.

Each test seeds one sent email (customer, content, links, broadcast with its context)
into the served application's database, hits its tracking URLs with real user agents
of mail clients, image proxies and link scanners, and checks the events that arrive at
the sandbox endpoint, and what the database kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pegabridge.config import Settings
from pegabridge.events.metrics import Activity
from pegabridge.installs import service as installs
from pegabridge.installs.vault import vault_for
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.store.db import create_engine
from pegabridge.store.tables import (
    broadcasts,
    contents,
    customers,
    links,
    outbox,
    tracking_hits,
)
from pegabridge.tracking.tokens import TokenKind, TokenPayload
from pegabridge.tracking.urls import TrackingUrls, key_ring_for

SAMPLES = Path(__file__).parent.parent / "samples" / "tracking"
with (SAMPLES / "agents.yaml").open(encoding="utf-8") as _stream:
    AGENTS = {
        case["name"]: case["user_agent"] for case in yaml.safe_load(_stream)["cases"]
    }

APPLE_MAIL = AGENTS["Apple Mail on a Mac"]
OUTLOOK = AGENTS["Outlook for Windows (Microsoft Office agent)"]
GMAIL_PROXY = AGENTS["Gmail image proxy claims Firefox on Windows XP"]
CHROME_ANDROID = AGENTS["Chrome on Android clicking a link"]
FIREFOX = AGENTS["Firefox on Windows clicking a link a minute after the send"]
SAFE_LINKS_SCANNER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36 BingPreview/1.0b"
)
BARRACUDA = "Barracuda Sentinel (EE)"

DESTINATION = "https://shop.example.com/ünïcode/päth?q=a%20b&utm_source=news&x=1#frag-ä"
SHORT_DESTINATION = "https://example.org/s?utm_medium=email&utm_campaign=from-url"
PORTAL, BRAND = 11, 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with the sample Apple relay list switched on."""
    return settings.model_copy(
        update={"apple_relay_ranges": str(SAMPLES / "relay-ranges.txt")}
    )


@dataclass
class Email:
    """One sent email seeded into the database, and its tracking URLs."""

    engine: AsyncEngine
    urls: TrackingUrls
    broadcast_id: int
    customer_id: int
    content_id: int
    links: dict[str, int] = field(default_factory=dict)

    def open_url(self) -> str:
        return self.urls.open_url(PORTAL, self.broadcast_id)

    def click_url(self, name: str) -> str:
        return self.urls.click_url(PORTAL, self.broadcast_id, self.links[name])

    def short_url(self, name: str) -> str:
        return self.urls.short_link_url(PORTAL, self.broadcast_id, self.links[name])

    def unsubscribe_url(self) -> str:
        return self.urls.unsubscribe_url(PORTAL, self.broadcast_id)


@pytest.fixture
async def engine(settings: Settings, served: Any) -> AsyncIterator[AsyncEngine]:
    """A connection pool of the test's own to the served application's database."""
    engine = create_engine(settings)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def installed(
    engine: AsyncEngine, settings: Settings, sandbox: SandboxEndpoint
) -> str:
    """Portal, brand and an active installation sending everything to the sandbox.

    Returns an API key of the portal.
    """
    async with engine.begin() as conn:
        await installs.create_portal(conn, PORTAL, "Acme portal")
        await installs.create_brand(conn, PORTAL, BRAND, "Acme")
        await installs.save_installation(
            conn,
            vault_for(settings),
            PORTAL,
            BRAND,
            installs.InstallSettings(
                endpoint_url=sandbox.url,
                username="pega",
                password="s3cret",
                activities=frozenset(Activity),
            ),
            activate=True,
        )
        return await installs.create_api_key(conn, PORTAL, "tests")


@pytest.fixture
async def email(
    engine: AsyncEngine, settings: Settings, served: Any, installed: str
) -> Email:
    """An email sent an hour ago, with two template links and one short link."""
    return await seed_email(engine, settings, served.base_url, sent_ago_s=3600)


async def seed_email(
    engine: AsyncEngine,
    settings: Settings,
    base_url: str,
    sent_ago_s: float,
    extra_links: dict[str, str] | None = None,
) -> Email:
    now = time.time()
    sent_at = now - sent_ago_s
    async with engine.begin() as conn:
        customer_id = await _insert(
            conn,
            customers.insert().values(
                portal_id=PORTAL,
                brand_id=BRAND,
                external_id="C-77",
                email=f"jane.{now}@example.com",
                bounce_count_soft=3,
                created_at=now,
                updated_at=now,
            ),
        )
        content_id = await _insert(
            conn,
            contents.insert().values(
                portal_id=PORTAL,
                brand_id=BRAND,
                name="Spring offer",
                subject="Hello {{first_name}}",
                created_at=now,
                updated_at=now,
            ),
        )
        specs = {
            "shop": ("click", DESTINATION, {}, ["spring", "shop"]),
            "terms": ("click", "https://example.com/terms", {}, []),
            "short": ("short", SHORT_DESTINATION, {"utm_campaign": "on-link"}, []),
        }
        for name, url in (extra_links or {}).items():
            specs[name] = ("click", url, {}, [])
        link_ids = {}
        for name, (kind, url, utm, tags) in specs.items():
            link_ids[name] = await _insert(
                conn,
                links.insert().values(
                    portal_id=PORTAL,
                    content_id=content_id,
                    kind=kind,
                    url=url,
                    alt=f"{name} link",
                    tags=json.dumps(tags),
                    utm=json.dumps(utm),
                    created_at=now,
                ),
            )
        broadcast_id = await _insert(
            conn,
            broadcasts.insert().values(
                portal_id=PORTAL,
                brand_id=BRAND,
                send_id=int(now * 1000) % 1_000_000,
                customer_id=customer_id,
                content_id=content_id,
                email_address="jane@example.com",
                state="sent",
                sent_at=sent_at,
                created_at=sent_at,
            ),
        )
        context = _context(customer_id, content_id, broadcast_id, sent_at)
        await conn.execute(
            broadcasts.update()
            .where(broadcasts.c.id == broadcast_id)
            .values(context=json.dumps(context))
        )

    vault = vault_for(settings)
    ring = key_ring_for(settings.tracking_keys, vault.derive(b"tracking"))
    return Email(
        engine,
        TrackingUrls(base_url, ring),
        broadcast_id,
        customer_id,
        content_id,
        link_ids,
    )


def _context(
    customer_id: int, content_id: int, broadcast_id: int, sent_at: float
) -> dict[str, Any]:
    return {
        "portal_id": PORTAL,
        "portal_name": "Acme portal",
        "brand_id": BRAND,
        "brand_name": "Acme",
        "customer_id": customer_id,
        "external_id": "C-77",
        "customer_email_address": "jane@example.com",
        "email_address": "jane@example.com",
        "email_domain": "example.com",
        "email_address_override": False,
        "broadcast_id": broadcast_id,
        "broadcast_timestamp": int(sent_at),
        "broadcast_type": "MAIL",
        "broadcast_event_type": "CAMPAIGNMAIL",
        "sub_type": "CAMPAIGN",
        "campaign_id": 5,
        "campaign_name": "Spring",
        "campaign_object_id": 2,
        "content_id": content_id,
        "content_name": "Spring offer",
        "subject": "Hello Jane",
        "mailing_type": "Marketing",
        "test_mailing": False,
        "broadcast_manual_options": {
            "UniqueOfferId": "OF-1",
            "InteractionId": "-563481321460449721",
        },
    }


async def _insert(conn: Any, statement: Any) -> int:
    result = await conn.execute(statement)
    return int(result.inserted_primary_key[0])


async def events_of(
    sandbox: SandboxEndpoint, count: int, metric: str | None = None
) -> list[dict[str, Any]]:
    """The first `count` events that arrived (of `metric`), waiting for them."""
    received = await sandbox.wait_for(count)
    events = [r.json() for r in received]
    return [e for e in events if metric is None or e["metric"] == metric]


async def scalar(engine: AsyncEngine, statement: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(statement)


async def hit_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        result = await conn.execute(select(tracking_hits).order_by(tracking_hits.c.id))
        return list(result)


async def outbox_count(engine: AsyncEngine, metric: str | None = None) -> int:
    statement = select(func.count()).select_from(outbox)
    if metric is not None:
        statement = statement.where(outbox.c.metric == metric)
    return int(await scalar(engine, statement))


async def soft_bounces(email: Email) -> int:
    return int(
        await scalar(
            email.engine,
            select(customers.c.bounce_count_soft).where(
                customers.c.id == email.customer_id
            ),
        )
    )


# --- Opens. ---


async def test_an_apple_mail_open_answers_the_pixel_and_sends_an_open(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            email.open_url(), headers={"User-Agent": APPLE_MAIL}
        )

    (event,) = await events_of(sandbox, 1, "opens")
    assert (response.status_code, response.headers["content-type"]) == (
        200,
        "image/gif",
    )
    assert "no-store" in response.headers["cache-control"]
    assert {k: event[k] for k in ("os", "browser", "machine_generated")} == {
        "os": "Mac OS X",
        "browser": "Apple Mail",
        "machine_generated": False,
    }


async def test_an_open_carries_the_broadcast_context(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(email.open_url(), headers={"User-Agent": OUTLOOK})

    (event,) = await events_of(sandbox, 1, "opens")
    assert (event["subject"], event["campaign_name"], event["broadcast_id"]) == (
        "Hello Jane",
        "Spring",
        email.broadcast_id,
    )
    assert event["broadcast_manual_options"]["InteractionId"] == "-563481321460449721"
    assert event["metric_id"] >= 1


async def test_a_human_open_resets_the_soft_bounce_count(email: Email) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(email.open_url(), headers={"User-Agent": OUTLOOK})

    assert await soft_bounces(email) == 0


async def test_a_gmail_proxy_open_is_a_real_open_named_gmail(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(email.open_url(), headers={"User-Agent": GMAIL_PROXY})

    (event,) = await events_of(sandbox, 1, "opens")
    assert (event["browser"], event["os"], event["machine_generated"]) == (
        "Gmail",
        "",
        False,
    )


async def test_an_apple_privacy_prefetch_is_flagged_with_its_reason(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    headers = {"User-Agent": "Mozilla/5.0", "X-Forwarded-For": "104.28.28.76"}
    async with httpx.AsyncClient() as client:
        await client.get(email.open_url(), headers=headers)

    (event,) = await events_of(sandbox, 1, "opens")
    (row,) = await hit_rows(email.engine)
    assert event["machine_generated"] is True
    assert (row.machine_generated, row.machine_reason) == (True, "apple-mpp-relay")
    assert await soft_bounces(email) == 3


async def test_a_head_request_for_the_pixel_is_a_machine_open(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.head(
            email.open_url(), headers={"User-Agent": APPLE_MAIL}
        )

    (event,) = await events_of(sandbox, 1, "opens")
    assert response.status_code == 200
    assert event["machine_generated"] is True
    assert (await hit_rows(email.engine))[0].machine_reason == "head-request"


# --- Clicks and short links. ---


async def test_a_click_redirects_to_the_stored_url_byte_for_byte(
    email: Email,
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            email.click_url("shop"), headers={"User-Agent": CHROME_ANDROID}
        )

    location = dict(response.headers.raw)[b"location"]
    assert response.status_code == 302
    assert location == DESTINATION.encode("utf-8")


async def test_a_click_sends_the_link_fields_and_utm_values_of_the_url(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(
            email.click_url("shop"), headers={"User-Agent": CHROME_ANDROID}
        )

    (event,) = await events_of(sandbox, 1, "clicks")
    assert {
        k: event[k] for k in ("link_id", "url", "alt", "tags", "google_source")
    } == {
        "link_id": email.links["shop"],
        "url": DESTINATION,
        "alt": "shop link",
        "tags": ["spring", "shop"],
        "google_source": "news",
    }
    assert (event["os"], event["browser"], event["machine_generated"]) == (
        "Android",
        "Chrome Mobile",
        False,
    )


async def test_a_short_link_sends_short_links_with_the_link_utm_winning(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            email.short_url("short"), headers={"User-Agent": FIREFOX}
        )

    (event,) = await events_of(sandbox, 1, "short_links")
    assert response.headers["location"] == SHORT_DESTINATION
    assert (event["google_campaign"], event["google_medium"]) == ("on-link", "email")


async def test_a_link_scanner_click_is_flagged_but_still_redirected(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            email.click_url("terms"), headers={"User-Agent": BARRACUDA}
        )

    (event,) = await events_of(sandbox, 1, "clicks")
    assert response.status_code == 302
    assert event["machine_generated"] is True
    assert (await hit_rows(email.engine))[0].machine_reason == "scanner-agent:barracuda"


async def test_a_machine_click_leaves_the_soft_bounce_count(email: Email) -> None:
    async with httpx.AsyncClient() as client:
        await client.get(
            email.click_url("terms"), headers={"User-Agent": SAFE_LINKS_SCANNER}
        )

    assert await soft_bounces(email) == 3


async def test_a_click_seconds_after_the_send_is_flagged(
    engine: AsyncEngine,
    settings: Settings,
    served: Any,
    installed: str,
    sandbox: SandboxEndpoint,
) -> None:
    fresh = await seed_email(engine, settings, served.base_url, sent_ago_s=1)
    async with httpx.AsyncClient() as client:
        await client.get(fresh.click_url("shop"), headers={"User-Agent": FIREFOX})

    (event,) = await events_of(sandbox, 1, "clicks")
    (row,) = await hit_rows(engine)
    assert event["machine_generated"] is True
    assert row.machine_reason.startswith("too-soon-after-send")


async def test_every_link_clicked_at_once_flags_the_later_clicks(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    urls = [email.click_url("shop"), email.click_url("terms"), email.short_url("short")]
    async with httpx.AsyncClient() as client:
        await asyncio.gather(
            *(client.get(url, headers={"User-Agent": FIREFOX}) for url in urls)
        )

    await events_of(sandbox, 3)
    reasons = sorted(
        row.machine_reason.split(":")[0] for row in await hit_rows(email.engine)
    )
    assert reasons[0] == ""
    assert set(reasons[1:]) <= {"burst-of-links", "impossible-speed"}
    assert all(reasons[1:])


# --- Refused input: 4xx or redirect, nothing recorded. ---


async def _assert_nothing_recorded(email: Email) -> None:
    await asyncio.sleep(0.1)
    assert await hit_rows(email.engine) == []
    assert await outbox_count(email.engine) == 0


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t[:-3], id="truncated"),
        pytest.param(
            lambda t: t[:10] + ("A" if t[10] != "A" else "B") + t[11:], id="altered"
        ),
        pytest.param(lambda t: t + "A", id="extended"),
        pytest.param(lambda t: "%" + t, id="percent-sign"),
        pytest.param(lambda t: t.replace(t[5], "%2F", 1), id="encoded-slash"),
        pytest.param(lambda t: t + "%00", id="nul-byte"),
        pytest.param(lambda t: t + "%C3%A9", id="non-ascii"),
        pytest.param(lambda t: t + "%ZZ", id="broken-escape"),
        pytest.param(lambda t: "x" * 5000, id="very-long"),
    ],
)
async def test_a_mangled_token_is_a_404_and_records_nothing(
    email: Email, mangle: Any
) -> None:
    token = email.click_url("shop").rsplit("/", 1)[1]
    base = email.click_url("shop").rsplit("/", 1)[0]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{base}/{mangle(token)}")

    assert response.status_code == 404
    await _assert_nothing_recorded(email)


async def test_a_token_naming_another_portal_is_a_404(email: Email) -> None:
    other = email.urls.ring.sign(
        TokenPayload(TokenKind.OPEN, PORTAL + 1, email.broadcast_id)
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{email.urls.base_url}/t/o/{other}")

    assert response.status_code == 404
    await _assert_nothing_recorded(email)


async def test_a_token_signed_by_another_deployment_is_a_404(
    email: Email, settings: Settings
) -> None:
    foreign = TrackingUrls(
        email.urls.base_url, key_ring_for("", b"another deployment's secret!!")
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(foreign.open_url(PORTAL, email.broadcast_id))

    assert response.status_code == 404
    await _assert_nothing_recorded(email)


async def test_a_click_token_on_the_pixel_path_is_a_404(email: Email) -> None:
    token = email.click_url("shop").rsplit("/", 1)[1]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{email.urls.base_url}/t/o/{token}")

    assert response.status_code == 404
    await _assert_nothing_recorded(email)


async def test_a_template_link_on_the_short_link_path_is_a_404(email: Email) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(email.short_url("shop"))

    assert response.status_code == 404
    await _assert_nothing_recorded(email)


async def test_a_stored_url_with_a_line_break_is_never_redirected_to(
    engine: AsyncEngine, settings: Settings, served: Any, installed: str
) -> None:
    evil = await seed_email(
        engine,
        settings,
        served.base_url,
        sent_ago_s=3600,
        extra_links={"evil": "https://example.com/\r\nSet-Cookie: a=b"},
    )
    async with httpx.AsyncClient() as client:
        response = await client.get(evil.click_url("evil"))

    assert response.status_code == 404
    assert "set-cookie" not in response.headers


async def test_a_ten_kilobyte_user_agent_is_recorded_not_refused(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    agent = APPLE_MAIL + " x" * 5000
    async with httpx.AsyncClient() as client:
        response = await client.get(email.open_url(), headers={"User-Agent": agent})

    (event,) = await events_of(sandbox, 1, "opens")
    assert response.status_code == 200
    assert (event["user_agent"], event["browser"]) == (agent, "Apple Mail")


async def test_extra_query_parameters_on_a_click_change_nothing(email: Email) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            email.click_url("shop") + "?utm_source=evil&next=https://evil.example"
        )

    assert response.headers.raw[0] is not None
    assert dict(response.headers.raw)[b"location"] == DESTINATION.encode("utf-8")


# --- Unsubscribes. ---


async def test_the_unsubscribe_page_changes_nothing(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            email.unsubscribe_url(), headers={"User-Agent": BARRACUDA}
        )

    assert response.status_code == 200
    assert '<form method="post"' in response.text
    assert (
        await scalar(
            email.engine,
            select(customers.c.unsubscribed_at).where(
                customers.c.id == email.customer_id
            ),
        )
        is None
    )
    assert await outbox_count(email.engine) == 0


async def test_a_one_click_post_unsubscribes_and_sends_one_event(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            email.unsubscribe_url(), data={"List-Unsubscribe": "One-Click"}
        )

    (event,) = await events_of(sandbox, 1, "unsubscribes")
    assert response.status_code == 200
    assert (event["customer_id"], event["subject"]) == (email.customer_id, "Hello Jane")
    assert (
        await scalar(
            email.engine,
            select(customers.c.unsubscribed_at).where(
                customers.c.id == email.customer_id
            ),
        )
        is not None
    )


async def test_unsubscribing_twice_records_one_event(email: Email) -> None:
    async with httpx.AsyncClient() as client:
        await asyncio.gather(
            client.post(
                email.unsubscribe_url(), data={"List-Unsubscribe": "One-Click"}
            ),
            client.post(email.unsubscribe_url(), data={"confirm": "yes"}),
        )
        again = await client.post(email.unsubscribe_url(), data={"confirm": "yes"})

    assert "already unsubscribed" in again.text
    assert await outbox_count(email.engine, "unsubscribes") == 1


async def test_a_forged_unsubscribe_token_is_a_404_page(email: Email) -> None:
    url = email.unsubscribe_url()[:-2]
    async with httpx.AsyncClient() as client:
        page = await client.get(url)
        post = await client.post(url, data={"List-Unsubscribe": "One-Click"})

    assert (page.status_code, post.status_code) == (404, 404)
    await _assert_nothing_recorded(email)


# --- Conversions. ---


async def test_a_conversion_pixel_after_a_click_is_attributed_by_the_cookie(
    email: Email, sandbox: SandboxEndpoint
) -> None:
    query = "name=order&value=49.90&currency=eur&reference=A-1"
    async with httpx.AsyncClient() as client:
        await client.get(email.click_url("shop"), headers={"User-Agent": FIREFOX})
        await client.get(f"{email.urls.base_url}/t/v?{query}")
        await client.get(f"{email.urls.base_url}/t/v?{query}")

    (conversion,) = await events_of(sandbox, 2, "conversions")
    assert {
        k: conversion[k]
        for k in (
            "conversion_name",
            "conversion_value",
            "conversion_currency",
            "conversion_reference",
            "link_id",
        )
    } == {
        "conversion_name": "order",
        "conversion_value": 49.9,
        "conversion_currency": "EUR",
        "conversion_reference": "A-1",
        "link_id": email.links["shop"],
    }
    assert await outbox_count(email.engine, "conversions") == 1


async def test_a_conversion_pixel_without_a_click_records_nothing(email: Email) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{email.urls.base_url}/t/v?name=order")

    assert (response.status_code, response.headers["x-conversion"]) == (
        200,
        "unattributed",
    )
    await _assert_nothing_recorded(email)


async def test_a_conversion_with_a_bad_value_is_a_400(email: Email) -> None:
    token = email.click_url("shop").rsplit("/", 1)[1]
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{email.urls.base_url}/t/v/{token}?name=order&value=lots"
        )

    assert (response.status_code, response.json()["field"]) == (400, "value")
    await _assert_nothing_recorded(email)


async def test_the_conversions_api_attributes_by_the_click_token(
    email: Email, installed: str, sandbox: SandboxEndpoint
) -> None:
    token = email.click_url("terms").rsplit("/", 1)[1]
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{email.urls.base_url}/api/v1/conversions",
            headers={"Authorization": f"Bearer {installed}"},
            json={"token": token, "name": "signup", "reference": "S-9"},
        )

    (event,) = await events_of(sandbox, 1, "conversions")
    assert (response.status_code, response.json()["state"]) == (202, "pending")
    assert (event["link_id"], event["conversion_value"]) == (email.links["terms"], None)


async def test_the_conversions_api_refuses_another_portals_token(
    email: Email, installed: str
) -> None:
    token = email.urls.ring.sign(
        TokenPayload(TokenKind.CLICK, PORTAL + 1, email.broadcast_id, 1)
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{email.urls.base_url}/api/v1/conversions",
            headers={"Authorization": f"Bearer {installed}"},
            json={"token": token, "name": "order"},
        )

    assert response.status_code == 404
    await _assert_nothing_recorded(email)


async def test_the_conversions_api_needs_an_api_key(email: Email) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{email.urls.base_url}/api/v1/conversions", json={"token": "x"}
        )

    assert response.status_code == 401


async def test_a_conversion_sent_without_a_json_content_type_says_what_to_fix(
    email: Email, installed: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{email.urls.base_url}/api/v1/conversions",
            headers={
                "Authorization": f"Bearer {installed}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            content=b'{"token": "x", "name": "order"}',
        )

    assert response.status_code == 422
    assert "Content-Type: application/json" in response.json()["error"]

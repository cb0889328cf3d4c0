"""The dashboard in Chromium: an outage seen and survived, a dead letter replayed.

Debian's Chromium (``/usr/bin/chromium``, or ``PEGABRIDGE_CHROMIUM``) is driven by
Playwright, so no browser download is needed; the tests skip with the reason when it
is absent. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pegabridge.sandbox import SandboxEndpoint

# The helpers of the integration tests: an installed brand, activities, waiting.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from ops_support import activity, install, until

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("PEGABRIDGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OPERATOR_EMAIL = "operator@example.com"
OPERATOR_PASSWORD = "a long operator password"


def _chromium() -> str:
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium") or ""
    if not path:
        pytest.skip(
            f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set "
            "PEGABRIDGE_CHROMIUM)"
        )
    return path


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """These tests run on SQLite only: the pages read the same queries on both."""
    return f"sqlite+aiosqlite:///{tmp_path / 'pegabridge.db'}"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium."""
    executable = _chromium()
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def operator(served: Any) -> tuple[str, str]:
    """An operator account (sees every portal): (email, password)."""
    from pegabridge.web import auth

    runtime = served.app.state.runtime
    await runtime.committer.run(
        lambda conn: auth.create_user(
            conn, OPERATOR_EMAIL, OPERATOR_PASSWORD, portal_id=None, is_admin=True
        )
    )
    return OPERATOR_EMAIL, OPERATOR_PASSWORD


@pytest.fixture
async def page(browser: Any, served: Any, operator: tuple[str, str]) -> Any:
    """A browser page signed in as the operator, 1400x1000."""
    context = await browser.new_context(
        base_url=served.base_url, viewport={"width": 1400, "height": 1000}
    )
    tab = await context.new_page()
    await tab.goto("/signin?next=/dashboard")
    await tab.fill("input[name=email]", operator[0])
    await tab.fill("input[name=password]", operator[1])
    await tab.click("button[type=submit]")
    await tab.wait_for_url("**/dashboard")
    try:
        yield tab
    finally:
        await context.close()


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def artifact(name: str) -> Path:
    """Where a screenshot of the tests goes (``test-artifacts/``, not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


async def test_the_dashboard_is_behind_sign_in(served: Any) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        answers = [
            await client.get(path)
            for path in (
                "/dashboard",
                "/dashboard/data.json",
                "/dashboard/dead-letters",
            )
        ]

    assert {a.status_code for a in answers} == {303}
    assert all(a.headers["location"].startswith("/signin") for a in answers)


async def test_an_outage_shows_the_backlog_the_reason_and_the_drain(
    served: Any, sandbox: SandboxEndpoint, page: Any
) -> None:
    brand = await install(served, sandbox)
    sandbox.responder = lambda _request: (503, '{"error":"Pega is in maintenance"}')
    await brand.post([activity("opens") for _ in range(6)])
    await brand.post(
        [activity("clicks", url="https://example.com/a") for _ in range(3)]
    )

    await page.goto(
        f"/dashboard?installation={brand.installation_id}&range=15m&refresh_s=1"
    )
    alert = page.locator(".banner.bad")
    await alert.wait_for(timeout=15_000)
    await page.wait_for_function(
        "document.querySelector('#kpi-pending .value').textContent === '9'",
        timeout=15_000,
    )
    await page.wait_for_timeout(2500)
    await page.screenshot(path=str(artifact("dashboard-outage.png")), full_page=True)
    assert "HTTP 503" in await alert.inner_text()

    sandbox.responder = None
    await page.wait_for_function(
        "document.querySelector('#kpi-pending .value').textContent === '0'",
        timeout=20_000,
    )
    await page.wait_for_timeout(2000)
    await page.screenshot(path=str(artifact("dashboard-recovered.png")), full_page=True)
    assert await page.locator(".banner.bad").count() == 0


async def test_the_replay_button_sends_a_dead_letter_to_the_receiver_again(
    served: Any, sandbox: SandboxEndpoint, page: Any
) -> None:
    brand = await install(served, sandbox)
    delivery = brand.runtime.delivery
    assert delivery is not None
    delivery.policy = dataclasses.replace(delivery.policy, max_age_s=0.3)
    sandbox.responder = lambda _request: (500, '{"error":"mapping failed"}')
    answer = await brand.post([activity("conversions")])
    uuid = answer.json()["items"][0]["uuid"]
    await until(lambda: _has_state(served.base_url, page, uuid, "dead"), 15)

    sandbox.responder = None
    await page.goto("/dashboard/dead-letters")
    await page.locator("summary", has_text="Preview the JSON").first.click()
    await page.screenshot(
        path=str(artifact("dashboard-dead-letters.png")), full_page=True
    )
    await page.click(f"button[data-replay='{uuid}']")
    await page.wait_for_url("**/dashboard/dead-letters?replayed=1*")

    [received] = await sandbox.wait_for(1, timeout_s=10)
    assert received.json()["uuid"] == uuid


async def _has_state(base_url: str, page: Any, uuid: str, state: str) -> bool:
    answer = await page.request.get(f"{base_url}/dashboard/deliveries?q={uuid}")
    return f"state {state}" in await answer.text()


async def test_the_delivery_log_finds_an_event_by_customer_and_shows_its_attempts(
    served: Any, sandbox: SandboxEndpoint, page: Any
) -> None:
    brand = await install(served, sandbox)
    answer = await brand.post([activity("opens", customer_id=4242), activity("opens")])
    uuid = answer.json()["items"][0]["uuid"]
    await sandbox.wait_for(2)
    # The endpoint's answer is written to the attempt log a moment after it arrives.
    await until(lambda: _has_state(served.base_url, page, uuid, "delivered"), 15)

    await page.goto("/dashboard/deliveries?q=4242")
    rows = page.locator(".table-wrap > table.log > tbody > tr:not(.attempts)")
    await page.locator("details summary").first.click()
    await page.screenshot(
        path=str(artifact("dashboard-delivery-log.png")), full_page=True
    )

    assert await rows.count() == 1
    assert "200" in await page.locator("tr.attempts").first.inner_text()

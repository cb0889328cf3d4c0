"""A new user installs the Pega app in a real browser, against a real receiver.

Playwright drives Debian's Chromium (``/usr/bin/chromium``); the tests skip with the
reason when it is absent. A screenshot of every step is saved under
``test-artifacts/browser/`` for people to look at.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pegabridge.sandbox import SandboxEndpoint, TokenIssuer
from pegabridge.web import pages

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

CHROMIUM = Path(os.environ.get("PEGABRIDGE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery"
HAVE_CHROMIUM = CHROMIUM.exists()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Any, name: str, database: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(
        path=str(ARTIFACTS / f"{database}-{name}.png"), full_page=True
    )


def database_kind(served: Any) -> str:
    url: str = served.app.state.runtime.settings.resolved_database_url()
    return "postgres" if url.startswith("postgresql") else "sqlite"


async def create_admin_and_brand(page: Any, served: Any, db: str) -> None:
    link = await pages.announce_setup(served.app.state.runtime)
    assert link is not None
    path = link.split("://", 1)[1].split("/", 1)[1]
    await page.goto(f"{served.base_url}/{path}")
    await shot(page, "01-setup", db)
    await page.get_by_label("Your email").fill("ana@example.com")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_label("Password again").fill(PASSWORD)
    await page.get_by_role("button", name="Create the administrator").click()

    await page.wait_for_url("**/admin?notice=welcome")
    portal_form = page.locator("form[action='/admin/portals']")
    await portal_form.get_by_label("Portal id").fill("1")
    await portal_form.get_by_label("Name").fill("Acme")
    await portal_form.get_by_role("button").click()
    brand_form = page.locator("form[action='/admin/brands']")
    await brand_form.get_by_label("Portal id").fill("1")
    await brand_form.get_by_label("Brand id").fill("10")
    await brand_form.get_by_label("Name").fill("Acme Shoes")
    await brand_form.get_by_role("button").click()
    await page.wait_for_url("**/admin?notice=brand-created")
    await shot(page, "02-admin", db)


async def test_a_new_user_installs_the_pega_app_and_events_arrive(
    browser: Any, served: Any, sandbox: SandboxEndpoint
) -> None:
    db = database_kind(served)
    page = await browser.new_page(viewport={"width": 1180, "height": 900})
    await create_admin_and_brand(page, served, db)

    await page.goto(f"{served.base_url}/store")
    await shot(page, "03-store", db)
    await page.get_by_role("link", name="Install").click()

    # Step 1, first with a wrong password: the test says so in plain words.
    await page.get_by_label("Endpoint URL").fill(sandbox.url)
    await page.get_by_label("Username").fill("pega")
    await page.get_by_label("Password").fill("not-the-password")
    await page.get_by_role("button", name="Test connection").click()
    result = page.locator("#connection-result[data-outcome]")
    await result.wait_for()
    assert await result.get_attribute("data-outcome") == "wrong_credentials"
    await shot(page, "04-step1-wrong-password", db)

    await page.get_by_label("Password").fill("s3cret")
    await page.get_by_role("button", name="Test connection").click()
    await page.locator("#connection-result[data-outcome='accepted']").wait_for()
    await shot(page, "05-step1-accepted", db)
    await page.get_by_role("button", name="Save and continue").click()

    # Step 2: every activity is offered with its line; clicks stay chosen.
    await page.wait_for_url("**/install/2")
    await page.get_by_label("Complaints").uncheck()
    await shot(page, "06-step2", db)
    await page.get_by_role("button", name="Save and continue").click()

    # Step 3: invoicing; finishing activates.
    await page.wait_for_url("**/install/3")
    await page.get_by_label("Quarterly").check()
    await page.get_by_label("PO number (optional)").fill("PO-4711")
    await shot(page, "07-step3", db)
    await page.get_by_role("button", name="Finish and start sending").click()

    await page.wait_for_url("**/pega?notice=installed")
    tests_so_far = len(sandbox.accepted())  # the connection test was accepted too
    await page.get_by_role("button", name="Send a test event").click()
    await sandbox.wait_for(tests_so_far + 1, timeout_s=15)
    await page.wait_for_timeout(300)  # the delivery result is written in a batch
    await page.reload()
    await shot(page, "08-installation", db)

    assert sandbox.accepted()[-1].json()["subject"] == "pegabridge test event"
    assert await page.get_by_test_id("sent-total").inner_text() == "1"


async def test_the_wizard_fits_a_phone_screen(
    browser: Any, served: Any, sandbox: SandboxEndpoint
) -> None:
    db = database_kind(served)
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await create_admin_and_brand(page, served, db)

    await page.goto(f"{served.base_url}/brands/1/10/install/1")
    await page.get_by_role("button", name="Save and continue").click()
    await page.locator("#f-e-username").wait_for()
    await shot(page, "09-phone-step1-errors", db)

    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert widths[0] <= widths[1]


async def test_step_one_with_an_oauth_client_tests_through_the_token_endpoint(
    browser: Any, served: Any, sandbox: SandboxEndpoint, issuer: TokenIssuer
) -> None:
    db = database_kind(served)
    page = await browser.new_page(viewport={"width": 1180, "height": 900})
    await create_admin_and_brand(page, served, db)
    await page.goto(f"{served.base_url}/brands/1/10/install/1")

    await page.get_by_label("Endpoint URL").fill(sandbox.url)
    await page.get_by_label("OAuth 2.0 client credentials").check()
    username_shown = await page.get_by_label("Username").is_visible()
    await page.get_by_label("Token URL").fill(issuer.url)
    await page.get_by_label("Client id").fill(issuer.client_id)
    await page.get_by_label("Client secret").fill("not-the-secret")
    await page.get_by_role("button", name="Test connection").click()
    refused = page.locator("#connection-result[data-outcome]")
    await refused.wait_for()
    outcome = await refused.get_attribute("data-outcome")
    await shot(page, "10-step1-oauth-refused", db)

    await page.get_by_label("Client secret").fill(issuer.client_secret)
    await page.get_by_role("button", name="Test connection").click()
    await page.locator("#connection-result[data-outcome='accepted']").wait_for()
    await shot(page, "11-step1-oauth-accepted", db)
    await page.get_by_role("button", name="Save and continue").click()
    await page.wait_for_url("**/install/2")

    assert not username_shown
    assert outcome == "token_refused"
    assert [r.status for r in issuer.requests] == [401, 200]

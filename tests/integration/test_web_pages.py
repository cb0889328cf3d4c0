"""The pages over real HTTP: first start, sign-in, CSRF, bad input changing nothing."""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx
import pytest

from pegabridge.installs import service
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.web import pages

PASSWORD = "a long enough password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


async def post_form(
    client: httpx.AsyncClient, page_url: str, data: dict[str, str], to: str = ""
) -> httpx.Response:
    """Open a page, take its CSRF token, and post the form."""
    token = csrf_of((await client.get(page_url)).text)
    return await client.post(to or page_url, data={**data, "csrf_token": token})


async def signed_in_admin(served: Any) -> httpx.AsyncClient:
    """A client signed in as the first administrator, with portals 1 and 2."""
    link = await pages.announce_setup(served.app.state.runtime)
    assert link is not None
    path = "/" + link.split("://", 1)[1].split("/", 1)[1]
    client = httpx.AsyncClient(base_url=served.base_url)
    await post_form(
        client,
        path,
        {"email": "ana@example.com", "password": PASSWORD, "password_again": PASSWORD},
    )
    for portal_id, brand_id in ((1, 10), (2, 20)):
        await post_form(
            client,
            "/admin",
            {"id": str(portal_id), "name": f"Portal {portal_id}"},
            "/admin/portals",
        )
        await post_form(
            client,
            "/admin",
            {"portal_id": str(portal_id), "id": str(brand_id), "name": "Brand"},
            "/admin/brands",
        )
    return client


async def installation(served: Any, portal_id: int, brand_id: int) -> Any:
    async with served.app.state.runtime.db.connect() as conn:
        return await service.find_installation(conn, portal_id, brand_id)


async def test_the_first_start_prints_a_setup_link(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    events = [getattr(r, "event", "") for r in caplog.get_records("setup")]
    assert "auth.setup_link" in events


async def test_a_setup_link_works_once(served: Any) -> None:
    client = await signed_in_admin(served)
    link = await pages.announce_setup(served.app.state.runtime)

    assert link is None  # an account exists: no more links
    await client.aclose()


async def test_step_one_saves_and_never_shows_the_password(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await signed_in_admin(served)
    url = "/brands/1/10/install/1"
    values = {"endpoint_url": sandbox.url, "username": "pega", "password": "s3cret"}

    response = await post_form(client, url, {**values, "action": "next"})
    page = (await client.get(url)).text

    assert response.headers["location"].endswith("/install/2")
    assert "s3cret" not in page and 'class="set-badge">set<' in page
    await client.aclose()


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("", "Enter the URL of the Pega REST endpoint"),
        ("https://pega.example.com/my api", "A URL cannot contain spaces"),
        ("http://pega.example.com/api", "must use https://"),
        ("https://10.1.2.3/api", "a private network address"),
        ("https://169.254.169.254/latest", "a cloud metadata address"),
    ],
)
async def test_a_bad_endpoint_is_refused_beside_the_field_and_nothing_is_saved(
    served: Any, endpoint: str, message: str
) -> None:
    client = await signed_in_admin(served)
    response = await post_form(
        client,
        "/brands/1/10/install/1",
        {"endpoint_url": endpoint, "username": "u", "password": "p", "action": "next"},
    )

    assert response.status_code == 400
    assert 'id="f-e-endpoint_url"' in response.text and message in response.text
    assert await installation(served, 1, 10) is None
    await client.aclose()


async def test_a_ten_thousand_character_po_number_is_refused_and_nothing_changes(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await signed_in_admin(served)
    values = {"endpoint_url": sandbox.url, "username": "pega", "password": "s3cret"}
    await post_form(client, "/brands/1/10/install/1", {**values, "action": "next"})

    response = await post_form(
        client,
        "/brands/1/10/install/3",
        {"invoice_interval": "monthly", "po_number": "9" * 10_000},
    )

    assert response.status_code == 400 and "at most 100 characters" in response.text
    inst = await installation(served, 1, 10)
    assert inst.po_number == "" and inst.activated_at is None
    await client.aclose()


async def test_a_forged_csrf_token_is_refused_and_nothing_changes(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await signed_in_admin(served)
    response = await client.post(
        "/brands/1/10/install/1",
        data={
            "endpoint_url": sandbox.url,
            "username": "pega",
            "password": "s3cret",
            "action": "next",
            "csrf_token": "forged",
        },
    )

    assert response.status_code == 403
    assert await installation(served, 1, 10) is None
    await client.aclose()


async def test_another_portals_brand_is_not_found_for_a_portal_user(
    served: Any,
) -> None:
    admin = await signed_in_admin(served)
    await post_form(
        admin,
        "/admin",
        {"portal_id": "1", "email": "bo@example.com", "password": PASSWORD},
        "/admin/users",
    )
    client = httpx.AsyncClient(base_url=served.base_url)
    await post_form(
        client, "/signin", {"email": "bo@example.com", "password": PASSWORD}
    )

    page = await client.get("/brands/2/20/install/1")
    token = csrf_of((await client.get("/brands/1/10/install/1")).text)
    post = await client.post(
        "/brands/2/20/install/1",
        data={"endpoint_url": "https://x.example", "csrf_token": token},
    )

    assert page.status_code == 404 and "no brand 20 in portal 2" in page.text
    assert post.status_code == 404
    assert await installation(served, 2, 20) is None
    await admin.aclose()
    await client.aclose()


async def test_an_account_is_locked_after_repeated_wrong_passwords(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await signed_in_admin(served)
    await admin.aclose()
    client = httpx.AsyncClient(base_url=served.base_url)
    caplog.set_level(logging.WARNING)

    for _ in range(served.app.state.runtime.settings.signin_max_failures):
        await post_form(
            client, "/signin", {"email": "ana@example.com", "password": "wrong!"}
        )
    right = await post_form(
        client, "/signin", {"email": "ana@example.com", "password": PASSWORD}
    )

    assert right.status_code == 400 and "locked" in right.text
    assert "auth.locked" in [getattr(r, "event", "") for r in caplog.records]
    await client.aclose()


async def test_signing_out_ends_the_session(served: Any) -> None:
    client = await signed_in_admin(served)
    cookie = client.cookies.get("pb_session")

    await post_form(client, "/store", {}, "/signout")
    again = httpx.AsyncClient(base_url=served.base_url, cookies={"pb_session": cookie})
    response = await again.get("/store")

    assert response.status_code == 303 and "/signin" in response.headers["location"]
    await client.aclose()
    await again.aclose()


async def test_the_session_cookie_is_http_only_and_same_site_lax(served: Any) -> None:
    admin = await signed_in_admin(served)
    await admin.aclose()
    fresh = httpx.AsyncClient(base_url=served.base_url)
    response = await post_form(
        fresh, "/signin", {"email": "ana@example.com", "password": PASSWORD}
    )

    header = response.headers["set-cookie"].lower()
    assert "pb_session=" in header and "httponly" in header and "samesite=lax" in header
    await fresh.aclose()


async def test_the_installation_page_statement_and_uninstall_work_after_the_wizard(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await signed_in_admin(served)
    values = {"endpoint_url": sandbox.url, "username": "pega", "password": "s3cret"}
    await post_form(client, "/brands/1/10/install/1", {**values, "action": "next"})
    await post_form(
        client,
        "/brands/1/10/install/3",
        {"invoice_interval": "yearly", "po_number": "PO-9"},
    )

    page = await client.get("/brands/1/10/pega")
    statement = await client.get("/brands/1/10/pega/invoice.csv")
    confirm = await client.get("/brands/1/10/pega/uninstall")
    await post_form(client, "/brands/1/10/pega/uninstall", {})

    assert "Active" in page.text and "PO-9" in statement.text
    assert "No events are waiting" in confirm.text
    assert await installation(served, 1, 10) is None
    await client.aclose()


async def test_a_mistyped_address_is_a_page_for_people_and_json_for_programs(
    served: Any,
) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        page = await client.get("/dashbord", headers={"accept": "text/html"})
        program = await client.get("/dashbord", headers={"accept": "application/json"})
        api = await client.get("/api/v1/nothing", headers={"accept": "text/html"})

    assert page.status_code == program.status_code == api.status_code == 404
    assert "Page not found" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert program.json() == api.json() == {"detail": "Not Found"}

"""The installation API and the connection test, over real HTTP on loopback."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest

from pegabridge.installs import service
from pegabridge.installs.connection_test import Outcome, check_connection
from pegabridge.installs.endpoint_guard import EndpointGuard
from pegabridge.sandbox import SandboxEndpoint


async def api_client(served: Any) -> httpx.AsyncClient:
    """A client with the API key of portal 1 (brand 10); portal 2 has brand 20."""
    runtime = served.app.state.runtime

    async def setup(conn: Any) -> str:
        for portal_id, brand_id in ((1, 10), (2, 20)):
            await service.create_portal(conn, portal_id, f"Portal {portal_id}")
            await service.create_brand(conn, portal_id, brand_id, "Brand")
        return await service.create_api_key(conn, 1, "tests")

    key = await runtime.committer.run(setup)
    return httpx.AsyncClient(
        base_url=served.base_url, headers={"Authorization": f"Bearer {key}"}
    )


def full_install(sandbox: SandboxEndpoint) -> dict[str, Any]:
    return {
        "endpoint_url": sandbox.url,
        "username": "pega",
        "password": "s3cret",
        "activities": ["broadcasts", "opens"],
        "invoice_interval": "monthly",
        "po_number": "PO-77",
        "activate": True,
    }


async def test_an_installation_through_the_api_sends_a_test_event(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await api_client(served)

    saved = await client.put("/api/v1/brands/10/pega", json=full_install(sandbox))
    sent = await client.post("/api/v1/brands/10/pega/test-event")
    await sandbox.wait_for(1)

    assert saved.status_code == 200 and saved.json()["state"] == "active"
    assert "s3cret" not in saved.text and saved.json()["password_set"] is True
    assert sandbox.accepted()[0].json()["uuid"] == sent.json()["uuid"]
    await client.aclose()


async def test_the_statement_counts_what_was_delivered_and_prints_the_po_number(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await api_client(served)
    await client.put("/api/v1/brands/10/pega", json=full_install(sandbox))
    await client.post("/api/v1/brands/10/pega/test-event")
    await sandbox.wait_for(1)
    for _ in range(50):
        statement = (await client.get("/api/v1/brands/10/pega/statement")).json()
        if statement["total"]:
            break
        await __import__("asyncio").sleep(0.1)

    csv = await client.get("/api/v1/brands/10/pega/statement?format=csv")

    assert statement["events_sent"]["broadcasts"] == 1
    assert "PO-77" in csv.text and ",broadcasts,1\r\n" in csv.text
    await client.aclose()


async def test_another_portals_brand_is_not_found_and_not_changed(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await api_client(served)

    response = await client.put("/api/v1/brands/20/pega", json=full_install(sandbox))

    assert response.status_code == 404
    async with served.app.state.runtime.db.connect() as conn:
        assert await service.find_installation(conn, 2, 20) is None
    await client.aclose()


async def test_a_po_number_of_ten_thousand_characters_is_refused(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    client = await api_client(served)

    response = await client.put(
        "/api/v1/brands/10/pega",
        json={**full_install(sandbox), "po_number": "x" * 10_000},
    )

    assert response.status_code == 422
    await client.aclose()


async def test_the_openapi_document_lists_the_installation_operations(
    served: Any,
) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        paths = (await client.get("/openapi.json")).json()["paths"]

    assert {"put", "get", "delete"} <= set(paths["/api/v1/brands/{brand_id}/pega"])
    assert "/api/v1/brands/{brand_id}/pega/test-connection" in paths


GUARD = EndpointGuard()


async def test_the_connection_test_names_wrong_credentials(
    sandbox: SandboxEndpoint,
) -> None:
    report = await check_connection(sandbox.url, "pega", "wrong", GUARD)

    assert report.outcome is Outcome.WRONG_CREDENTIALS and report.status_code == 401


async def test_the_connection_test_names_a_400_as_wrong_credentials(
    sandbox: SandboxEndpoint,
) -> None:
    sandbox.responder = lambda _request: (400, '{"error":"bad auth"}')

    report = await check_connection(sandbox.url, "pega", "s3cret", GUARD)

    assert report.outcome is Outcome.WRONG_CREDENTIALS


async def test_the_connection_test_names_a_missing_endpoint(
    sandbox: SandboxEndpoint,
) -> None:
    sandbox.responder = lambda _request: (404, "no such path")

    report = await check_connection(sandbox.url, "pega", "s3cret", GUARD)

    assert report.outcome is Outcome.NOT_FOUND


async def test_the_connection_test_does_not_call_a_redirect_a_success(
    sandbox: SandboxEndpoint,
) -> None:
    sandbox.responder = lambda _request: (302, "", {"Location": "/signin"})

    report = await check_connection(sandbox.url, "pega", "s3cret", GUARD)

    assert (report.outcome, report.status_code) == (Outcome.OTHER_ANSWER, 302)
    assert "redirect" in report.message


async def test_the_connection_test_names_a_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    report = await check_connection(f"http://127.0.0.1:{port}/x", "u", "p", GUARD)

    assert report.outcome is Outcome.REFUSED


async def test_the_connection_test_names_a_name_that_does_not_resolve() -> None:
    report = await check_connection("https://pega.invalid/api", "u", "p", GUARD)

    assert report.outcome is Outcome.NO_SUCH_NAME


@pytest.mark.parametrize("url", ["https://10.9.9.9/api", "https://[fe80::1]/api"])
async def test_the_connection_test_refuses_a_private_address(url: str) -> None:
    report = await check_connection(url, "u", "p", GUARD)

    assert report.outcome is Outcome.BLOCKED


async def test_an_id_beyond_64_bits_in_the_path_is_refused_not_a_server_error(
    served: Any,
) -> None:
    client = await api_client(served)

    response = await client.get("/api/v1/brands/9223372036854775808/pega")
    await client.aclose()

    assert response.status_code == 422


async def test_the_api_page_loads_its_scripts_from_pegabridge_not_a_cdn(
    served: Any,
) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        page = (await client.get("/docs")).text
        script = await client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")

    assert "cdn." not in page and "/static/vendor/swagger-ui/" in page
    assert script.status_code == 200

"""What the dashboard asks a person to notice about an installation."""

from __future__ import annotations

from pegabridge.ops import InstallationFigures
from pegabridge.web.ops_routes import _warnings


def figures(state: str) -> InstallationFigures:
    return InstallationFigures(
        id=1,
        portal_id=1746,
        brand_id=1,
        brand_name="Mok-Up",
        state=state,
        pause_reason="the endpoint refused the username and password (HTTP 401)",
        endpoint_url="https://pega.example/ih",
        last_failure_at=1_800_000_000.0,
        last_failure="HTTP 401",
    )


def test_a_paused_installation_shows_its_reason_and_no_retry_promise() -> None:
    titles = [w["title"] for w in _warnings(figures("paused"), {})]

    assert titles == ["Mok-Up: paused"]


def test_an_active_installation_whose_endpoint_fails_says_so() -> None:
    titles = [w["title"] for w in _warnings(figures("active"), {})]

    assert titles == ["Mok-Up: the endpoint is failing"]

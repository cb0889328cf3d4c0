"""``pegabridge sandbox-endpoint`` with a token endpoint, for a trial of OAuth."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from test_cli import PEGABRIDGE

pytestmark = pytest.mark.slow  # starts a Python process


@pytest.fixture
def running_sandbox() -> Iterator[tuple[str, str]]:
    """The sandbox with a token endpoint on free ports: (events URL, token URL)."""
    process = subprocess.Popen(
        [str(PEGABRIDGE), "sandbox-endpoint", "--port", "0", "--token-port", "0",
         "--client-id", "trial", "--client-secret", "trial-secret"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        urls = [process.stdout.readline().split()[-1] for _ in range(2)]
        yield urls[0], urls[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_token_from_the_sandbox_token_endpoint_is_accepted_by_the_sandbox(
    running_sandbox: tuple[str, str],
) -> None:
    events_url, token_url = running_sandbox

    token = httpx.post(
        token_url,
        data={"grant_type": "client_credentials"},
        auth=("trial", "trial-secret"),
    ).json()["access_token"]
    with_token = httpx.post(
        events_url,
        json={"metric": "opens"},
        headers={"Authorization": f"Bearer {token}"},
    )
    forged = httpx.post(
        events_url, json={"metric": "opens"}, headers={"Authorization": "Bearer x"}
    )

    assert (with_token.status_code, forged.status_code) == (200, 401)

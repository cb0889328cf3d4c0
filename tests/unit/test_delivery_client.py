"""The delivery client tells failures in words a marketer can act on."""

from __future__ import annotations

import socket

from pegabridge.delivery.client import EndpointClient, EndpointConfig


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_is_told_in_plain_words() -> None:
    client = EndpointClient(
        EndpointConfig(
            url=f"http://127.0.0.1:{closed_port()}/events", username="u", password="p"
        )
    )

    result = await client.post("{}")
    await client.close()

    assert result.status_code is None
    assert result.error.startswith("The server refused the connection")

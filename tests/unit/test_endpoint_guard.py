"""The endpoint guard: which addresses an endpoint may point at."""

from __future__ import annotations

import ipaddress

import pytest

from pegabridge.delivery.client import EndpointClient, EndpointConfig
from pegabridge.installs.endpoint_guard import (
    EndpointGuard,
    EndpointRefused,
    parse_ranges,
)

GUARD = EndpointGuard()


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "169.254.10.10",
        "fd00:ec2::254",
        "fe80::1",
        "fc00::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
    ],
)
def test_private_link_local_and_metadata_addresses_are_refused(address: str) -> None:
    assert GUARD.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert GUARD.refusal(ipaddress.ip_address(address)) is None


def test_loopback_is_allowed_for_trials_unless_switched_off() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")

    assert GUARD.refusal(loopback) is None
    assert EndpointGuard(allow_loopback=False).refusal(loopback) is not None


def test_a_configured_range_lets_a_private_address_through() -> None:
    guard = EndpointGuard(allowed=parse_ranges("10.20.0.0/16, 192.168.5.0/24"))

    assert guard.refusal(ipaddress.ip_address("10.20.3.4")) is None
    assert guard.refusal(ipaddress.ip_address("10.21.3.4")) is not None


def test_a_bad_range_in_the_configuration_is_named() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_ranges("10.0.0.0/33")


def test_the_refusal_names_the_host_the_address_and_the_setting() -> None:
    with pytest.raises(EndpointRefused) as caught:
        GUARD.check_addresses("pega.internal", ["10.1.1.1"])

    assert "pega.internal points to 10.1.1.1" in str(caught.value)
    assert "PEGABRIDGE_ENDPOINT_ALLOWED_RANGES" in str(caught.value)


async def test_a_name_is_checked_after_it_resolves() -> None:
    with pytest.raises(EndpointRefused):
        await EndpointGuard(allow_loopback=False).check_url("http://localhost:9/x")


async def test_the_delivery_client_refuses_a_forbidden_address_without_connecting() -> (
    None
):
    client = EndpointClient(
        EndpointConfig(
            url="https://169.254.169.254/latest/meta-data",
            username="u",
            password="p",
            guard=EndpointGuard(),
        )
    )

    result = await client.post("{}")
    await client.close()

    assert result.status_code is None and "cloud metadata" in result.error


async def test_the_delivery_client_checks_names_when_it_resolves_them() -> None:
    client = EndpointClient(
        EndpointConfig(
            url="http://localhost:9/events",
            username="u",
            password="p",
            guard=EndpointGuard(allow_loopback=False),
        )
    )

    result = await client.post("{}")
    await client.close()

    assert result.status_code is None and "loopback" in result.error

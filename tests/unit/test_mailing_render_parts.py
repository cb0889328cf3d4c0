"""Pure parts of mailing: templates, links, JSON paths, throttle, MIME, addresses."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from pegabridge.mailing.customers import normalise_email
from pegabridge.mailing.errors import MailingError
from pegabridge.mailing.jsonpath import Missing, PathError, parse_path, resolve
from pegabridge.mailing.links import LinkSpec, html_link_specs, rewrite_html
from pegabridge.mailing.mime import build_message, encode_text_header
from pegabridge.mailing.sends import HourlyThrottle, bounce_uuid
from pegabridge.mailing.templates import TemplateInvalid, check_content
from pegabridge.mailing.triggers import parse_pega_body

BASE = "https://t.example/t/"


def test_a_template_error_names_its_part_and_line() -> None:
    with pytest.raises(TemplateInvalid) as caught:
        check_content("Hi", "<p>\n\n{{ customer.first_name ", "", {})

    assert (caught.value.problems[0].part, caught.value.problems[0].line) == ("html", 3)


def test_an_undeclared_variable_is_refused_at_save_time() -> None:
    with pytest.raises(TemplateInvalid, match="'OfferCode' is not defined"):
        check_content("{{ OfferCode }}", "<p>x</p>", "", {"UniqueOfferId": ""})


def test_a_missing_manual_variable_renders_its_default() -> None:
    compiled = check_content(
        "Offer {{ UniqueOfferId }}", "<p>x</p>", "", {"UniqueOfferId": "none"}
    )

    subject, _, _ = compiled.render({"UniqueOfferId": "none", "customer": {}})

    assert subject == "Offer none"


def test_the_sandbox_refuses_python_internals() -> None:
    with pytest.raises(TemplateInvalid):
        check_content("x", "{{ ''.__class__.__mro__[1].__subclasses__() }}", "", {})


def test_link_settings_come_from_data_attributes_and_are_removed() -> None:
    html = (
        '<a href="https://s.example/a?x=1&amp;y=2" data-pb-tags="a, b" '
        'data-pb-utm-source="pega">Buy <b>now</b></a>'
    )

    [spec] = html_link_specs(html, BASE)
    rewritten = rewrite_html(html, BASE, lambda s: BASE + "c/TOKEN")

    assert spec == LinkSpec(
        "click",
        "https://s.example/a?x=1&y=2",
        "Buy now",
        ("a", "b"),
        (("source", "pega"),),
    )
    assert rewritten == f'<a href="{BASE}c/TOKEN">Buy <b>now</b></a>'


def test_mailto_tracked_and_opted_out_links_are_not_tracked() -> None:
    html = (
        '<a href="mailto:a@b.example">m</a><a href="https://t.example/t/s/X">s</a>'
        '<a href="https://x.example" data-pb-track="no">n</a>'
    )

    assert html_link_specs(html, BASE) == []


def test_a_path_reads_nested_keys_and_positions() -> None:
    document = {"Offers": [{"Id": "7"}], "A b": {"c": "d"}}

    assert resolve(document, parse_path("$.Offers[0].Id")) == "7"
    assert resolve(document, parse_path("$['A b'].c")) == "d"


def test_a_path_in_another_form_is_refused() -> None:
    with pytest.raises(PathError):
        parse_path("$.Offers[*].Id")


def test_a_missing_value_is_reported_as_missing() -> None:
    with pytest.raises(Missing):
        resolve({"Customer": {}}, parse_path("$.Customer.Id"))


def test_pega_numbers_are_kept_digit_for_digit() -> None:
    body = b'{"InteractionId": -563481321460449721, "Score": 0.10}'

    assert parse_pega_body(body) == {
        "InteractionId": "-563481321460449721",
        "Score": "0.10",
    }


async def test_the_throttle_waits_once_the_hourly_limit_is_reached() -> None:
    now = [1000.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    throttle = HourlyThrottle(2, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await throttle.acquire()

    assert waits == [3600.0]


def test_a_bounce_uuid_is_stable_and_version_4() -> None:
    first = bounce_uuid("0b8c5c43-4a6e-4d0c-9e55-1f6e0b7a1c11")

    assert first == bounce_uuid("0b8c5c43-4a6e-4d0c-9e55-1f6e0b7a1c11")
    assert first[14] == "4"


def test_a_message_parses_back_with_its_parts_and_encoded_subject() -> None:
    raw = build_message(
        [("From", "a@b.example"), ("", encode_text_header("Subject", "Grüße ✓"))],
        "text body",
        "<p>html body é</p>",
    )

    message = message_from_bytes(raw, policy=policy.default)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert message["Subject"] == "Grüße ✓"
    assert html.strip() == "<p>html body é</p>"


@pytest.mark.parametrize("address", ["ann", "ann@", "a b@c.example", "a@-x.example"])
def test_broken_addresses_are_refused(address: str) -> None:
    with pytest.raises(MailingError):
        normalise_email(address)


def test_an_address_is_kept_in_lower_case() -> None:
    assert normalise_email(" Ann@Example.ORG ") == "ann@example.org"

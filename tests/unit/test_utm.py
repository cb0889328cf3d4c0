"""UTM extraction: link values first, then the URL's parameters, also when wrapped."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pegabridge.tracking.utm import GoogleFields, google_fields, unwrap_url

DESTINATION = (
    "https://shop.example/spring/sale?utm_source=pega&utm_medium=email"
    "&utm_campaign=spring%20sale&utm_term=shoes&utm_content=hero#top"
)
EXPECTED = GoogleFields(
    google_source="pega",
    google_medium="email",
    google_term="shoes",
    google_content="hero",
    google_campaign="spring sale",
)


def safe_links(url: str) -> str:
    return (
        "https://eur03.safelinks.protection.outlook.com/?url="
        + quote(url, safe="")
        + "&data=05%7C02%7Cx%40y.example%7C0&sdata=abc%3D&reserved=0"
    )


def test_the_url_parameters_fill_the_fields() -> None:
    assert google_fields(DESTINATION) == EXPECTED


def test_values_set_on_the_link_win_over_the_url() -> None:
    fields = google_fields(
        DESTINATION, {"google_source": "newsletter", "google_term": ""}
    )

    assert fields.google_source == "newsletter"
    assert fields.google_term == "shoes"


def test_a_url_without_utm_parameters_gives_empty_fields() -> None:
    assert google_fields("https://shop.example/?ref=mail") == GoogleFields()


def test_parameter_names_are_matched_in_any_case_and_the_first_value_wins() -> None:
    fields = google_fields("https://a.example/?UTM_Source=one&utm_source=two")

    assert fields.google_source == "one"


def test_fields_are_named_as_in_the_event() -> None:
    assert set(EXPECTED.as_dict()) == {
        "google_source",
        "google_medium",
        "google_term",
        "google_content",
        "google_campaign",
    }


def test_a_safe_links_wrapped_url_is_read_through() -> None:
    assert google_fields(safe_links(DESTINATION)) == EXPECTED


def test_a_proofpoint_v2_wrapped_url_is_read_through() -> None:
    wrapped = "https://urldefense.proofpoint.com/v2/url?u=https-3A__shop.example_a-3Futm-5Fsource-3Dpega-26utm-5Fmedium-3Demail&d=DwMFaQ&c=x&r=y"

    assert (
        unwrap_url(wrapped) == "https://shop.example/a?utm_source=pega&utm_medium=email"
    )
    assert google_fields(wrapped).google_medium == "email"


def test_a_proofpoint_v3_wrapped_url_restores_its_replaced_characters() -> None:
    replaced = base64.urlsafe_b64encode("%é".encode()).decode().rstrip("=")
    wrapped = (
        "https://urldefense.com/v3/__https://shop.example/a*2Fb?utm_source=caf*"
        f"&utm_medium=email__;{replaced}!!AbCdEf!GhIjKl$"
    )

    assert unwrap_url(wrapped) == (
        "https://shop.example/a%2Fb?utm_source=café&utm_medium=email"
    )


def test_a_proofpoint_v3_run_of_replaced_characters_is_restored() -> None:
    # `**A` stands for a run of two replaced characters.
    replaced = base64.urlsafe_b64encode(b"%%").decode().rstrip("=")
    wrapped = f"https://urldefense.com/v3/__https://a.example/?utm_source=x**Ay__;{replaced}!!id$"

    assert unwrap_url(wrapped) == "https://a.example/?utm_source=x%%y"


def test_a_safe_link_around_a_proofpoint_link_is_unwrapped_twice() -> None:
    inner = "https://urldefense.proofpoint.com/v2/url?u=https-3A__shop.example_-3Futm-5Fcampaign-3Dspring&d=x"

    assert google_fields(safe_links(inner)).google_campaign == "spring"


def test_an_ordinary_url_is_left_as_it_is() -> None:
    assert unwrap_url(DESTINATION) == DESTINATION


def test_a_v3_link_with_broken_replacement_bytes_is_left_wrapped() -> None:
    wrapped = "https://urldefense.com/v3/__https://a.example/?utm_source=x*__;gA!!id$"

    assert unwrap_url(wrapped) == wrapped


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://[::1",
        "https://a.example/?utm_source=%ff%fe&utm_medium=%",
        "https://a.example/?utm_source=%E2%82",
        "https://eur03.safelinks.protection.outlook.com/?data=no-url",
        "https://urldefense.proofpoint.com/v2/url?u=",
        "https://urldefense.com/v3/__broken",
        "https://urldefense.com/v3/__x__;***!",
        "javascript:alert(1)?utm_source=x",
        "https://a.example/?" + "utm_source=x&" * 20_000,
    ],
)
def test_odd_urls_never_raise(url: str) -> None:
    assert isinstance(google_fields(url), GoogleFields)


def test_invalid_percent_escapes_become_replacement_characters() -> None:
    fields = google_fields("https://a.example/?utm_source=news%ffletter")

    assert fields.google_source == "news\ufffdletter"


@given(st.text(max_size=300))
def test_any_text_as_url_gives_fields_without_raising(url: str) -> None:
    assert isinstance(google_fields(url), GoogleFields)


@given(st.text(max_size=200))
def test_any_text_inside_a_proofpoint_v3_wrapper_never_raises(inner: str) -> None:
    wrapped = f"https://urldefense.com/v3/__{inner}__;{inner}!!x$"

    assert isinstance(unwrap_url(wrapped), str)

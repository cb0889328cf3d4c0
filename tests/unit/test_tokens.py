"""Signed tracking tokens: round trips, rotation, and refusal of anything altered."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pegabridge.tracking.tokens import (
    MAX_ID,
    InvalidToken,
    KeyRing,
    SigningKey,
    TokenKind,
    TokenPayload,
)

OLD_KEY = SigningKey(1, b"old secret of sixteen+ bytes")
NEW_KEY = SigningKey(2, b"new secret of sixteen+ bytes")
RING = KeyRing([OLD_KEY, NEW_KEY])
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

ids = st.integers(min_value=0, max_value=MAX_ID)
payloads = st.builds(TokenPayload, st.sampled_from(TokenKind), ids, ids, ids)
CLICK = TokenPayload(TokenKind.CLICK, portal_id=42, broadcast_id=987_654_321, link_id=7)


@given(payloads)
def test_every_payload_survives_a_round_trip(payload: TokenPayload) -> None:
    assert RING.verify(RING.sign(payload)) == payload


@given(payloads, st.data())
def test_changing_any_character_is_refused(
    payload: TokenPayload, data: st.DataObject
) -> None:
    token = RING.sign(payload)
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(
        st.sampled_from(ALPHABET).filter(lambda c: c != token[index])
    )

    with pytest.raises(InvalidToken):
        RING.verify(token[:index] + replacement + token[index + 1 :])


@given(payloads, st.data())
def test_truncating_or_extending_a_token_is_refused(
    payload: TokenPayload, data: st.DataObject
) -> None:
    token = RING.sign(payload)
    cut = data.draw(st.integers(0, len(token) - 1))
    extra = data.draw(st.text(alphabet=ALPHABET, min_size=1, max_size=8))

    with pytest.raises(InvalidToken):
        RING.verify(token[:cut])
    with pytest.raises(InvalidToken):
        RING.verify(token + extra)


@given(st.text(max_size=120))
def test_arbitrary_text_raises_only_invalid_token(text: str) -> None:
    with pytest.raises(InvalidToken):
        RING.verify(text)


@given(st.binary(min_size=0, max_size=60))
def test_arbitrary_bytes_in_token_form_raise_only_invalid_token(raw: bytes) -> None:
    token = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    with pytest.raises(InvalidToken):
        RING.verify(token)


def test_new_tokens_are_signed_with_the_newest_key() -> None:
    only_new = KeyRing([NEW_KEY])

    assert only_new.verify(RING.sign(CLICK)) == CLICK


def test_tokens_signed_with_an_older_key_still_verify() -> None:
    old_token = KeyRing([OLD_KEY]).sign(CLICK)

    assert RING.verify(old_token) == CLICK


def test_a_token_of_a_retired_key_is_refused() -> None:
    old_token = KeyRing([OLD_KEY]).sign(CLICK)

    with pytest.raises(InvalidToken):
        KeyRing([NEW_KEY]).verify(old_token)


def test_a_token_signed_with_another_secret_under_the_same_id_is_refused() -> None:
    forged = KeyRing([SigningKey(2, b"an attacker's guess at it")]).sign(CLICK)

    with pytest.raises(InvalidToken):
        RING.verify(forged)


def test_a_token_of_another_kind_is_refused_when_a_kind_is_expected() -> None:
    token = RING.sign(CLICK)

    with pytest.raises(InvalidToken, match="unsubscribe"):
        RING.verify(token, kind=TokenKind.UNSUBSCRIBE)


def test_non_canonical_base64_of_a_valid_token_is_refused() -> None:
    # A link id of two varint bytes makes 22 bytes: the last character has spare bits.
    token = RING.sign(TokenPayload(TokenKind.CLICK, 42, 987_654_321, link_id=700))
    last = ALPHABET.index(token[-1])
    # Flip an unused low bit of the last character: same bytes, different string.
    twin = token[:-1] + ALPHABET[last ^ 1]
    assert len(token) % 4 == 2
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(
        token + "=="
    )

    with pytest.raises(InvalidToken):
        RING.verify(twin)


def test_a_click_token_for_realistic_ids_is_short() -> None:
    assert len(RING.sign(CLICK)) <= 32


def test_the_largest_ids_fit_in_a_token_under_the_length_limit() -> None:
    payload = TokenPayload(TokenKind.CONVERSION, MAX_ID, MAX_ID, MAX_ID)

    assert RING.verify(RING.sign(payload)) == payload


def test_a_negative_id_cannot_be_signed() -> None:
    with pytest.raises(ValueError, match="portal_id"):
        TokenPayload(TokenKind.OPEN, portal_id=-1, broadcast_id=1)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        SigningKey(1, b"short")


def test_duplicate_key_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        KeyRing([OLD_KEY, SigningKey(1, b"another secret, same id!")])


def test_a_ring_reads_its_keys_from_configuration_text() -> None:
    text = f"1:{KeyRing.new_secret()}, 5:{KeyRing.new_secret()}"

    ring = KeyRing.from_config(text)

    assert ring.signing_key_id == 5
    assert ring.verify(ring.sign(CLICK)) == CLICK


def test_malformed_configuration_names_the_expected_form() -> None:
    with pytest.raises(ValueError, match="id:base64secret"):
        KeyRing.from_config("one:c2VjcmV0c2VjcmV0c2VjcmV0")


def test_the_secret_is_not_in_the_key_repr() -> None:
    assert "sixteen" not in repr(OLD_KEY)

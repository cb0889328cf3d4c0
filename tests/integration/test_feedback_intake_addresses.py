"""Reading VERP return paths: which addresses carry a broadcast token."""

from __future__ import annotations

from pegabridge.feedback.matching import verp_address, verp_tokens


def test_a_verp_address_gives_back_its_token() -> None:
    assert verp_tokens([verp_address("AbC-_1", "return.example")]) == ["AbC-_1"]


def test_the_prefix_is_read_in_any_case_and_brackets_are_dropped() -> None:
    assert verp_tokens(["<BOUNCE+tok@Return.Example>"]) == ["tok"]


def test_other_addresses_and_empty_tokens_carry_nothing() -> None:
    found = verp_tokens(["fbl@return.example", "bounce+@return.example", "bounce+x"])

    assert found == []


def test_a_token_seen_twice_is_tried_once() -> None:
    assert verp_tokens(["bounce+t@a.example", "bounce+t@b.example"]) == ["t"]

"""The conversion fields a pixel or a server hands in, checked before storing.

A conversion names its goal (`name`), optionally a value with its ISO 4217 currency,
and the client's reference (an order number). With a reference, reporting the same
conversion again records nothing new; see `TrackingService.convert`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

MAX_TEXT_LENGTH: Final = 200
_CURRENCY: Final = re.compile(r"[A-Z]{3}")


class ConversionError(ValueError):
    """A conversion field does not fit; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Conversion:
    """The checked fields of one conversion."""

    name: str = ""
    value: float | int | None = None
    currency: str = ""
    reference: str = ""


def parse_conversion(
    name: str = "",
    value: str | float | int | None = None,
    currency: str = "",
    reference: str = "",
) -> Conversion:
    """Check and normalise the fields; raises `ConversionError` naming the bad one.

    `value` may be a number or its text (`"12.50"`); empty text means no value. A
    currency is three letters (any case); it needs a value to qualify.
    """
    checked_value = _value(value)
    code = currency.strip().upper()
    if code and not _CURRENCY.fullmatch(code):
        raise ConversionError("currency", "expected an ISO 4217 code such as EUR")
    if code and checked_value is None:
        raise ConversionError("currency", "a currency needs a value")

    return Conversion(
        name=_text("name", name),
        value=checked_value,
        currency=code,
        reference=_text("reference", reference),
    )


def _text(field: str, text: str) -> str:
    cleaned = text.strip()
    if len(cleaned) > MAX_TEXT_LENGTH:
        raise ConversionError(field, f"at most {MAX_TEXT_LENGTH} characters")
    if any(ord(char) < 0x20 for char in cleaned):
        raise ConversionError(field, "control characters are not allowed")
    return cleaned


def _value(value: str | float | int | None) -> float | int | None:
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            raise ConversionError("value", "expected a number, not true or false")
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            raise ConversionError("value", "expected a number such as 12.50") from None

    if isinstance(value, float) and not math.isfinite(value):
        raise ConversionError("value", "expected a finite number")
    if abs(value) > 1e15:
        raise ConversionError("value", "the number is too large")
    return value

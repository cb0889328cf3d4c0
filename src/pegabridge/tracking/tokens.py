"""Signed tracking tokens: the short string in every pixel, link and unsubscribe URL.

A token names what was hit (kind, portal, broadcast and, for links, the link) and is
signed with a server key, so a forged or altered token is refused before anything is
looked up or recorded. Layout, before URL-safe base64 without padding:

    byte 0     format version (high 4 bits) and token kind (low 4 bits)
    byte 1     key id of the signing key
    varints    portal id, broadcast id, link id (unsigned LEB128, 0 when none)
    12 bytes   HMAC-SHA256 of a fixed context label and all the bytes above, truncated

An open token for realistic ids is about 30 characters. Keys rotate through a `KeyRing`:
new tokens are signed with the newest key, and tokens signed with any key still in the
ring keep working, so old emails stay valid while a key is phased out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

FORMAT_VERSION: Final = 1
MAC_LENGTH: Final = 12
"""Bytes of the truncated HMAC-SHA256: 96 bits, far beyond guessing over HTTP."""

MIN_SECRET_LENGTH: Final = 16
MAX_ID: Final = 2**63 - 1
MAX_TOKEN_LENGTH: Final = 80
"""Characters; longer input is refused before any decoding."""

_CONTEXT: Final = b"pegabridge.tracking-token.v1\x00"
_TOKEN_ALPHABET: Final = re.compile(r"[A-Za-z0-9_-]+")


class InvalidToken(Exception):
    """The token is forged, altered, truncated, of another kind, or not a token."""


class TokenKind(IntEnum):
    """What a token opens; the value is stored in the token's first byte."""

    OPEN = 0
    CLICK = 1
    UNSUBSCRIBE = 2
    CONVERSION = 3
    # The return path and broadcast header of a sent email: names the broadcast that a
    # bounce or complaint comes back about.
    BOUNCE = 4


@dataclass(frozen=True, slots=True)
class TokenPayload:
    """What a token names. `link_id` is 0 when the token is not about a link."""

    kind: TokenKind
    portal_id: int
    broadcast_id: int
    link_id: int = 0

    def __post_init__(self) -> None:
        for name in ("portal_id", "broadcast_id", "link_id"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_ID:
                raise ValueError(f"{name} must be between 0 and {MAX_ID}, not {value}")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One HMAC key and the id written into the tokens it signs (0-255)."""

    key_id: int
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 255:
            raise ValueError(f"key_id must be between 0 and 255, not {self.key_id}")
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"a signing secret needs at least {MIN_SECRET_LENGTH} bytes; "
                "make one with `KeyRing.new_secret()`"
            )


class KeyRing:
    """The signing keys in use: the last one signs, all of them verify."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one signing key")
        ids = [key.key_id for key in keys]
        if len(set(ids)) != len(ids):
            raise ValueError(f"key ids in a key ring must be unique, got {ids}")

        self._keys = {key.key_id: key.secret for key in keys}
        self._newest = keys[-1]

    @classmethod
    def from_config(cls, text: str) -> KeyRing:
        """Build a ring from `"id:base64secret,id:base64secret"`, oldest first.

        This is the form the secret takes in configuration; the last key signs.
        """
        keys: list[SigningKey] = []
        for item in filter(None, (part.strip() for part in text.split(","))):
            key_id, _, encoded = item.partition(":")
            try:
                secret = base64.urlsafe_b64decode(_pad(encoded.strip()))
                keys.append(SigningKey(int(key_id), secret))
            except (ValueError, binascii.Error) as exc:
                raise ValueError(
                    "tracking keys must read 'id:base64secret[,id:base64secret...]'; "
                    f"the entry with id {key_id.strip()!r} does not: {exc}"
                ) from exc
        return cls(keys)

    @staticmethod
    def new_secret() -> str:
        """A fresh random secret (32 bytes), base64-encoded for configuration."""
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")

    @property
    def signing_key_id(self) -> int:
        """Id of the key that signs new tokens."""
        return self._newest.key_id

    def sign(self, payload: TokenPayload) -> str:
        """Return the token for `payload`, signed with the newest key."""
        body = bytes(((FORMAT_VERSION << 4) | payload.kind, self._newest.key_id))
        body += _encode_varint(payload.portal_id)
        body += _encode_varint(payload.broadcast_id)
        body += _encode_varint(payload.link_id)

        raw = body + _mac(self._newest.secret, body)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def verify(self, token: str, *, kind: TokenKind | None = None) -> TokenPayload:
        """Return the payload of `token`, checking its signature (and `kind` if given).

        Raises `InvalidToken`, and no other exception, for anything that is not a token
        this ring signed unchanged.
        """
        raw = _decode_base64(token)
        if len(raw) < 2 + 3 + MAC_LENGTH:
            raise InvalidToken("token too short")

        body, tag = raw[:-MAC_LENGTH], raw[-MAC_LENGTH:]
        secret = self._keys.get(body[1])
        if secret is None or not hmac.compare_digest(tag, _mac(secret, body)):
            raise InvalidToken("token signature does not match")

        payload = _decode_body(body)
        if kind is not None and payload.kind is not kind:
            raise InvalidToken(f"expected a {kind.name.lower()} token")
        return payload


def _mac(secret: bytes, body: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + body, hashlib.sha256).digest()[:MAC_LENGTH]


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def _decode_base64(token: object) -> bytes:
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidToken("not a token")
    if not _TOKEN_ALPHABET.fullmatch(token) or len(token) % 4 == 1:
        raise InvalidToken("not a token")

    raw = base64.urlsafe_b64decode(_pad(token))
    # Unused low bits in the last character would let two strings carry one token.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != token:
        raise InvalidToken("token is not in canonical form")
    return raw


def _decode_body(body: bytes) -> TokenPayload:
    version, kind_code = body[0] >> 4, body[0] & 0x0F
    if version != FORMAT_VERSION:
        raise InvalidToken("unknown token format")
    try:
        kind = TokenKind(kind_code)
    except ValueError as exc:
        raise InvalidToken("unknown token kind") from exc

    position = 2
    values: list[int] = []
    for _ in range(3):
        value, position = _decode_varint(body, position)
        values.append(value)
    if position != len(body):
        raise InvalidToken("unexpected bytes in token")

    try:
        return TokenPayload(kind, values[0], values[1], values[2])
    except ValueError as exc:
        raise InvalidToken("token ids out of range") from exc


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
            continue
        out.append(byte)
        return bytes(out)


def _decode_varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            raise InvalidToken("token ends inside a number")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    raise InvalidToken("number in token too long")

"""The public tracking URLs written into emails, and the key ring that signs them.

Paths, as agreed with mailing (which renders them into every email):

    /t/o/{token}   open pixel               (open token)
    /t/c/{token}   template link redirect   (click token naming the link)
    /t/s/{token}   short link redirect      (click token naming the link)
    /t/u/{token}   unsubscribe page, RFC 8058 one-click POST (unsubscribe token)
    /t/v/{token}   conversion pixel         (conversion or click token)

Every process that signs or verifies tokens must build its ring with `key_ring_for`
from the same settings, so that a token made by a sender is accepted by the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pegabridge.tracking.tokens import KeyRing, SigningKey, TokenKind, TokenPayload

OPEN_PATH: Final = "/t/o/"
CLICK_PATH: Final = "/t/c/"
SHORT_LINK_PATH: Final = "/t/s/"
UNSUBSCRIBE_PATH: Final = "/t/u/"
CONVERSION_PATH: Final = "/t/v/"

DERIVED_KEY_ID: Final = 0
"""Key id of the key derived from the secret key when no tracking keys are set."""


def key_ring_for(tracking_keys: str, derived_secret: bytes) -> KeyRing:
    """The ring from the `tracking_keys` setting, else one key from `derived_secret`.

    Pass `vault.derive(b"tracking")` as `derived_secret`: the embedded default then
    needs no configuration, and every process sharing the secret key agrees.
    """
    if tracking_keys.strip():
        return KeyRing.from_config(tracking_keys)
    return KeyRing([SigningKey(DERIVED_KEY_ID, derived_secret)])


@dataclass(frozen=True, slots=True)
class TrackingUrls:
    """Builds the signed URLs of one deployment (`base_url` without a trailing `/`)."""

    base_url: str
    ring: KeyRing

    def open_url(self, portal_id: int, broadcast_id: int) -> str:
        """The open pixel of a personal email."""
        return self._url(OPEN_PATH, TokenKind.OPEN, portal_id, broadcast_id)

    def click_url(self, portal_id: int, broadcast_id: int, link_id: int) -> str:
        """The redirect of a template link (`links.kind` = `click`)."""
        return self._url(CLICK_PATH, TokenKind.CLICK, portal_id, broadcast_id, link_id)

    def short_link_url(self, portal_id: int, broadcast_id: int, link_id: int) -> str:
        """The redirect of a short link (`links.kind` = `short`)."""
        return self._url(
            SHORT_LINK_PATH, TokenKind.CLICK, portal_id, broadcast_id, link_id
        )

    def unsubscribe_url(self, portal_id: int, broadcast_id: int) -> str:
        """The unsubscribe page, also the `List-Unsubscribe` one-click address."""
        return self._url(
            UNSUBSCRIBE_PATH, TokenKind.UNSUBSCRIBE, portal_id, broadcast_id
        )

    def conversion_url(
        self, portal_id: int, broadcast_id: int, link_id: int = 0
    ) -> str:
        """A conversion pixel already attributed to a broadcast (and link)."""
        return self._url(
            CONVERSION_PATH, TokenKind.CONVERSION, portal_id, broadcast_id, link_id
        )

    def _url(
        self,
        path: str,
        kind: TokenKind,
        portal_id: int,
        broadcast_id: int,
        link_id: int = 0,
    ) -> str:
        token = self.ring.sign(TokenPayload(kind, portal_id, broadcast_id, link_id))
        return f"{self.base_url.rstrip('/')}{path}{token}"

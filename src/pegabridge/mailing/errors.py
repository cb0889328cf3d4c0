"""The errors of the mailing side: one root, each with the field it is about."""

from __future__ import annotations


class MailingError(Exception):
    """Input that mailing refuses; ``field`` names what to fix."""

    status = 422

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(MailingError):
    """A customer, content, trigger or send that does not exist (in this brand)."""

    status = 404


class Conflict(MailingError):
    """The input clashes with what is stored, e.g. a customer address taken."""

    status = 409


class SendFailed(MailingError):
    """The mail relay could not be reached or refused the whole message."""

    status = 502

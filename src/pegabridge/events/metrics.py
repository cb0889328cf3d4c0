"""The eight metrics of the interaction format and the activity choices."""

from __future__ import annotations

from enum import StrEnum


class Metric(StrEnum):
    """An email activity; the value is the ``metric`` field of the JSON message."""

    BROADCASTS = "broadcasts"
    OPENS = "opens"
    CLICKS = "clicks"
    SHORT_LINKS = "short_links"
    BOUNCES = "bounces"
    COMPLAINTS = "complaints"
    UNSUBSCRIBES = "unsubscribes"
    CONVERSIONS = "conversions"


class Activity(StrEnum):
    """A choice in step 2 of the installation wizard.

    ``clicks`` covers both the ``clicks`` and the ``short_links`` metric: both are a
    click of the customer, set up differently.
    """

    BROADCASTS = "broadcasts"
    OPENS = "opens"
    CLICKS = "clicks"
    BOUNCES = "bounces"
    COMPLAINTS = "complaints"
    UNSUBSCRIBES = "unsubscribes"
    CONVERSIONS = "conversions"


ACTIVITY_DESCRIPTIONS: dict[Activity, str] = {
    Activity.BROADCASTS: (
        "Each personal email sent; a bulk send gives one per customer."
    ),
    Activity.OPENS: "The customer's mail client loaded the open pixel of an email.",
    Activity.CLICKS: "A tracked link or a short link in an email was followed.",
    Activity.BOUNCES: "The receiving side reported that an email was not delivered.",
    Activity.COMPLAINTS: "The customer marked an email as spam (a feedback loop).",
    Activity.UNSUBSCRIBES: "The customer unsubscribed through an email.",
    Activity.CONVERSIONS: "A goal such as an order was reached after an email.",
}


def activity_of(metric: Metric) -> Activity:
    """The wizard choice that decides whether events of ``metric`` are sent."""
    if metric is Metric.SHORT_LINKS:
        return Activity.CLICKS
    return Activity(metric.value)


def parse_activities(text: str) -> frozenset[Activity]:
    """Read a comma-separated list of activities, refusing unknown words.

    ``short_links`` is accepted as another name for ``clicks``.
    """
    chosen: set[Activity] = set()
    for word in (part.strip().lower() for part in text.split(",")):
        if not word:
            continue
        if word == Metric.SHORT_LINKS:
            word = Activity.CLICKS.value
        try:
            chosen.add(Activity(word))
        except ValueError:
            known = ", ".join(a.value for a in Activity)
            raise ValueError(
                f"unknown activity {word!r}; choose from {known}"
            ) from None
    return frozenset(chosen)


def format_activities(chosen: frozenset[Activity] | set[Activity]) -> str:
    """The stored form of a set of activities, in the wizard's order."""
    return ",".join(a.value for a in Activity if a in chosen)

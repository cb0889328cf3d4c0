"""The Prometheus metrics, scraped over HTTP while events flow to the sandbox."""

from __future__ import annotations

from typing import Any

from ops_support import activity, install, scrape, until, value

from pegabridge.sandbox import SandboxEndpoint


async def test_recorded_and_delivered_events_move_the_counters(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    brand = await install(served, sandbox)
    inst = str(brand.installation_id)
    before = await scrape(served.base_url)

    await brand.post([activity("opens"), activity("opens"), activity("clicks")])
    await sandbox.wait_for(3)

    async def delivered_three() -> Any:
        after = await scrape(served.base_url)
        moved = value(after, "pegabridge_deliveries_total", outcome="delivered") - (
            value(before, "pegabridge_deliveries_total", outcome="delivered")
        )
        return after if moved >= 3 else None

    after = await until(delivered_three)
    opens = {"metric": "opens", "portal": "1746", "brand": "1", "outcome": "pending"}
    assert (
        value(after, "pegabridge_activities_recorded_total", **opens)
        - value(before, "pegabridge_activities_recorded_total", **opens)
        == 2
    )
    assert (
        value(after, "pegabridge_delivery_latency_seconds_count", installation=inst)
        - value(before, "pegabridge_delivery_latency_seconds_count", installation=inst)
        == 3
    )
    assert value(after, "pegabridge_endpoint_answers_total", code="200") >= 3


async def test_an_outage_shows_as_backlog_answer_codes_and_retries(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    brand = await install(served, sandbox)
    inst = str(brand.installation_id)
    sandbox.responder = lambda _request: (503, '{"error":"maintenance"}')

    await brand.post([activity("opens"), activity("bounces", bounce_type="HARD")])
    during = await until(
        _scrape_when(
            served.base_url,
            lambda s: value(s, "pegabridge_endpoint_answers_total", code="503") >= 2,
        )
    )
    assert value(during, "pegabridge_outbox_pending", installation=inst) == 2
    assert value(during, "pegabridge_deliveries_total", outcome="retry") >= 2

    sandbox.responder = None
    drained = await until(
        _scrape_when(
            served.base_url,
            lambda s: value(s, "pegabridge_outbox_pending", installation=inst) == 0,
        )
    )
    assert (
        value(
            drained, "pegabridge_outbox_oldest_pending_age_seconds", installation=inst
        )
        == 0
    )


async def test_the_outbox_age_gauge_grows_while_an_event_waits(
    served: Any, sandbox: SandboxEndpoint
) -> None:
    brand = await install(served, sandbox)
    inst = str(brand.installation_id)
    sandbox.responder = lambda _request: (500, "")

    await brand.post([activity("opens")])
    waiting = await until(
        _scrape_when(
            served.base_url,
            lambda s: (
                value(
                    s, "pegabridge_outbox_oldest_pending_age_seconds", installation=inst
                )
                > 0.3
            ),
        )
    )

    assert value(waiting, "pegabridge_outbox_pending", installation=inst) == 1


async def test_the_workers_gauge_says_the_workers_run(served: Any) -> None:
    samples = await scrape(served.base_url)

    assert value(samples, "pegabridge_delivery_workers_running") == 1


def _scrape_when(base_url: str, condition: Any) -> Any:
    async def check() -> Any:
        samples = await scrape(base_url)
        return samples if condition(samples) else None

    return check

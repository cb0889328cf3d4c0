"""Operating pegabridge over HTTP: ``/metrics`` and the dashboard pages.

``/metrics`` is for Prometheus and carries no personal data, so it needs no sign-in
(restrict it at the network edge when that matters). The dashboard pages, their JSON
and the replay actions are for signed-in people only.
"""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge import metrics, ops
from pegabridge.events.metrics import Metric
from pegabridge.web import auth, pages
from pegabridge.web.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def prometheus_metrics(request: Request) -> Response:
    """Counters and histograms of this process, outbox figures read now."""
    runtime = _runtime(request)
    delivery = runtime.delivery
    async with runtime.db.connect() as conn:
        await metrics.refresh_outbox(
            conn,
            lanes=delivery.lane_stats() if delivery is not None else None,
            workers_running=delivery.running if delivery is not None else False,
        )
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)


def readiness(runtime: Runtime) -> tuple[bool, str]:
    """Whether this process's delivery workers run: (ok, what to say).

    A process started without workers (``deliver=False``) is ready: others deliver.
    """
    if runtime.delivery is None:
        return True, "not in this process"
    if runtime.delivery.running:
        return True, "running"
    return False, "stopped"


# --- The dashboard: behind sign-in, each account sees its own portal's brands. ---

ALL = "all"
DEFAULT_RANGE = "6h"
LOG_STATES = ("pending", "delivered", "dead", "skipped")


async def _visible_figures(
    request: Request, user: auth.User
) -> list[ops.InstallationFigures]:
    portal = None if user.is_operator else (user.portal_id or -1)
    async with _runtime(request).db.connect() as conn:
        found = await ops.installation_figures(conn, portal)
    return [f for f in found if user.may_see(f.portal_id)]


def _chosen(
    visible: list[ops.InstallationFigures], wanted: str
) -> ops.InstallationFigures | None:
    """The installation asked for; None means all visible ones together."""
    if wanted.isdigit():
        for figures in visible:
            if figures.id == int(wanted):
                return figures
        raise pages.PageError(
            404,
            "No such installation",
            "There is no installation that you can see "
            f"with the number {wanted}. Nothing was changed.",
        )
    if wanted != ALL and len(visible) == 1:
        return visible[0]
    return None


def _range(wanted: str) -> str:
    return wanted if wanted in ops.RANGES_S else DEFAULT_RANGE


def _figures_document(
    visible: list[ops.InstallationFigures],
    chosen: ops.InstallationFigures | None,
    lanes: dict[int, dict[str, object]],
) -> dict[str, object]:
    """The headline figures and the warnings of one installation or of all."""
    group = [chosen] if chosen is not None else visible
    attempts: dict[str, int] = {}
    for f in group:
        for outcome, n in f.attempts_24h.items():
            attempts[outcome] = attempts.get(outcome, 0) + n
    ages = [f.oldest_pending_age_s for f in group if f.oldest_pending_age_s]
    total = sum(attempts.values())
    return {
        "pending": sum(f.pending for f in group),
        "dead": sum(f.dead for f in group),
        "delivered": sum(f.counts.get("delivered", 0) for f in group),
        "oldest_pending_age_s": max(ages) if ages else None,
        "success_rate_24h": attempts.get("delivered", 0) / total if total else None,
        "attempts_24h": total,
        "warnings": [w for f in group for w in _warnings(f, lanes.get(f.id, {}))],
    }


def _warnings(
    f: ops.InstallationFigures, lane: dict[str, object]
) -> list[dict[str, str]]:
    """What a person should notice about one installation, most serious first."""
    name = f.brand_name or f"brand {f.brand_id}"
    found = []
    if f.state == "paused":
        found.append(
            {"level": "warn", "title": f"{name}: paused", "text": f.pause_reason}
        )
    if f.state != "paused" and f.failing and f.last_failure_at is not None:
        # While paused nothing is retried: the pause reason above says it all.
        since = time.strftime("%H:%M:%S", time.localtime(f.last_failure_at))
        circuit = (
            " Only a probe is sent now and then." if lane.get("circuit_open") else ""
        )
        found.append(
            {
                "level": "bad",
                "title": f"{name}: the endpoint is failing",
                "text": f"Last answer at {since}: {f.last_failure}. Events wait and "
                f"are retried; nothing is lost.{circuit}",
            }
        )
    return found


def _tile(f: ops.InstallationFigures) -> dict[str, object]:
    return {
        "id": f.id,
        "name": f.brand_name or f"brand {f.brand_id}",
        "portal_id": f.portal_id,
        "brand_id": f.brand_id,
        "state": f.state,
        "pending": f.pending,
        "dead": f.dead,
        "failing": f.failing,
        "success_rate_24h": f.success_rate_24h,
    }


@router.get("/dashboard", include_in_schema=False)
async def dashboard(
    request: Request,
    installation: str = "",
    range: str = DEFAULT_RANGE,
    refresh_s: float = 5.0,
) -> Response:
    """Charts and headline figures of one installation, or of all visible ones."""
    session = await pages.require_session(request)
    visible = await _visible_figures(request, session.user)
    chosen = _chosen(visible, installation)
    context = {
        "nav": "dashboard",
        "when": _when,
        "tiles": [_tile(f) for f in visible],
        "selected": chosen.id if chosen else ALL,
        "chosen": chosen,
        "range": _range(range),
        "ranges": list(ops.RANGES_S),
        "metrics": [m.value for m in Metric],
        "refresh_s": min(max(refresh_s, 1.0), 300.0),
    }
    return pages.render(request, "dashboard/overview.html", context, session)


@router.get("/dashboard/data.json", include_in_schema=False)
async def dashboard_data(
    request: Request, installation: str = ALL, range: str = DEFAULT_RANGE
) -> JSONResponse:
    """What the dashboard's charts and figures show, refreshed every few seconds."""
    session = await pages.require_session(request)
    runtime = _runtime(request)
    visible = await _visible_figures(request, session.user)
    chosen = _chosen(visible, installation)
    ids = [chosen.id] if chosen else [f.id for f in visible]
    async with runtime.db.connect() as conn:
        data = await ops.series(conn, ids, _range(range))
    lanes = runtime.delivery.lane_stats() if runtime.delivery else {}
    document = {
        "now": time.time(),
        "selected": chosen.id if chosen else ALL,
        "tiles": [_tile(f) for f in visible],
        "figures": _figures_document(visible, chosen, lanes),
        "series": data.as_dict(),
    }
    return JSONResponse(document, headers={"Cache-Control": "no-store"})


@router.get("/dashboard/deliveries", include_in_schema=False)
async def delivery_log(
    request: Request,
    q: str = "",
    metric: str = "",
    state: str = "",
    installation: str = "",
) -> Response:
    """The newest events, searchable, each with its attempts."""
    session = await pages.require_session(request)
    user = session.user
    search = ops.Search(
        text=q[:80],
        metric=metric if metric in {m.value for m in Metric} else "",
        state=state if state in LOG_STATES else "",
        installation_id=int(installation) if installation.isdigit() else None,
        portal_id=None if user.is_operator else (user.portal_id or -1),
    )
    async with _runtime(request).db.connect() as conn:
        rows = await ops.search_events(conn, search)
        attempts = await ops.attempts_of(conn, [r.id for r in rows])
    context = {
        "nav": "dashboard",
        "when": _when,
        "rows": rows,
        "attempts": attempts,
        "search": search,
        "installation": installation,
        "metrics": [m.value for m in Metric],
        "states": LOG_STATES,
    }
    return pages.render(request, "dashboard/deliveries.html", context, session)


@router.get("/dashboard/events/{uuid}", include_in_schema=False)
async def event_page(request: Request, uuid: str) -> Response:
    """One event: the JSON sent and every attempt with the endpoint's answer."""
    session = await pages.require_session(request)
    async with _runtime(request).db.connect() as conn:
        detail = await ops.event_detail(conn, uuid[:36])
    if detail is None or not session.user.may_see(detail.event.portal_id):
        raise pages.PageError(
            404, "No such event", "There is no event with this uuid that you can see."
        )
    context = {
        "nav": "dashboard",
        "when": _when,
        "detail": detail,
        "payload": _pretty_json(detail.payload),
    }
    return pages.render(request, "dashboard/event.html", context, session)


@router.get("/dashboard/dead-letters", include_in_schema=False)
async def dead_letters(request: Request, installation: str = "") -> Response:
    """Dead letters with a preview of the JSON that a replay sends."""
    session = await pages.require_session(request)
    user = session.user
    search = ops.Search(
        state="dead",
        installation_id=int(installation) if installation.isdigit() else None,
        portal_id=None if user.is_operator else (user.portal_id or -1),
        limit=500,
    )
    async with _runtime(request).db.connect() as conn:
        rows = await ops.search_events(conn, search)
        payloads = await ops.payloads_of(conn, [r.uuid for r in rows])
    context = {
        "nav": "dashboard",
        "when": _when,
        "rows": rows,
        "payloads": {u: _pretty_json(p) for u, p in payloads.items()},
        "installation": installation,
        "replayed": request.query_params.get("replayed", ""),
    }
    return pages.render(request, "dashboard/dead_letters.html", context, session)


@router.post("/dashboard/dead-letters/replay", include_in_schema=False)
async def replay_dead_letters(request: Request) -> Response:
    """Replay one, the selected or all (visible) dead letters; then back to the list."""
    session = await pages.require_session(request)
    values = await pages.read_form(request, session)
    chosen = (await pages.read_form_lists(request)).get("uuid", [])
    user = session.user
    installation = values.get("installation", "")
    runtime = _runtime(request)

    async def act(conn: AsyncConnection) -> int:
        uuids = await ops.dead_uuids(
            conn,
            installation_id=int(installation) if installation.isdigit() else None,
            uuids=_replay_choice(values, chosen),
            portal_id=None if user.is_operator else (user.portal_id or -1),
        )
        return await ops.replay(conn, uuids)

    count = await runtime.committer.run(act)
    if runtime.delivery is not None:
        runtime.delivery.wake()
    log.info(
        "dead letters replayed",
        extra={"event": "ops.replayed", "count": count, "user_id": user.id},
    )
    target = f"/dashboard/dead-letters?replayed={count}"
    if installation.isdigit():
        target += f"&installation={installation}"
    return RedirectResponse(target, status_code=303)


def _replay_choice(values: dict[str, str], checked: list[str]) -> list[str] | None:
    """The uuids a replay form asks for: one row's, the checked ones, or None (all)."""
    if values.get("one"):
        return [values["one"]]
    if values.get("all") == "1":
        return None
    return checked[:10_000]


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _pretty_json(payload: str) -> str:
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except ValueError:
        return payload

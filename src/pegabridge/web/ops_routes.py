"""Operating pegabridge over HTTP: ``/metrics`` and the dashboard pages.

``/metrics`` is for Prometheus and carries no personal data, so it needs no sign-in
(restrict it at the network edge when that matters). The dashboard pages, their JSON
and the replay actions are for signed-in people only.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pegabridge import metrics
from pegabridge.web.runtime import Runtime

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

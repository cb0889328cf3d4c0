"""A minimal Pega stand-in for benchmarks, in its own process.

It answers every POST with 200 (or 503 while failing is switched on) and remembers when
each ``uuid`` first arrived; ``GET /arrivals`` returns those times (Unix seconds) and
``POST /control?failing=1`` switches failing on or off.
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web

arrivals: dict[str, float] = {}
state = {"failing": False}


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    if state["failing"]:
        return web.Response(status=503, text="{}")
    marker = body.find(b'"uuid":"')
    if marker >= 0:
        arrivals.setdefault(body[marker + 8 : marker + 44].decode(), time.time())
    return web.Response(status=200, text="{}", content_type="application/json")


async def report(_request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(arrivals), content_type="application/json")


async def control(request: web.Request) -> web.Response:
    state["failing"] = request.query.get("failing") == "1"
    if request.query.get("clear") == "1":
        arrivals.clear()
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/events", receive)
    app.router.add_get("/arrivals", report)
    app.router.add_post("/control", control)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

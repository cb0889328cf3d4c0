"""What the benchmarks share: pegabridge served in a child process, timing, memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
PEGABRIDGE = str(REPO / ".venv" / "bin" / "pegabridge")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    """The value below which ``share`` of ``values`` lie (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))
    return ordered[index]


def cli(env: dict[str, str], *args: str, stdin: str = "") -> str:
    """Run a ``pegabridge`` command; its standard output."""
    done = subprocess.run(
        [PEGABRIDGE, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory of a running process (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) a process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def wait_http(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.5),
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


@contextlib.contextmanager
def serving(
    env: dict[str, str], port: int, *extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``pegabridge serve`` in a child process for the duration of the block."""
    process = subprocess.Popen(
        [PEGABRIDGE, "serve", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(port)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def bench_env(var_dir: Path, **overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PEGABRIDGE_VAR_DIR=str(var_dir),
        PEGABRIDGE_SECRET_KEY="bench-secret",
        PEGABRIDGE_SQLITE_SYNCHRONOUS=os.environ.get(
            "BENCH_SQLITE_SYNCHRONOUS", "FULL"
        ),
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    env.pop(
        "PEGABRIDGE_DATABASE_URL", None
    ) if "PEGABRIDGE_DATABASE_URL" not in overrides else None
    return env


def python() -> str:
    return sys.executable


class Receiver:
    """The benchmark's receiver (``bench/receiver.py``) in a child process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Receiver:
        self._process = subprocess.Popen(
            [python(), "-m", "bench.receiver", "--port", str(self.port)],
            cwd=REPO,
        )
        wait_http(self.port)
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=10)

    async def arrivals(self, session: aiohttp.ClientSession) -> dict[str, float]:
        base = f"http://127.0.0.1:{self.port}"
        async with session.get(f"{base}/arrivals") as response:
            document: dict[str, float] = await response.json()
        return document

    async def control(self, session: aiohttp.ClientSession, **query: str) -> None:
        base = f"http://127.0.0.1:{self.port}"
        async with session.post(f"{base}/control", params=query) as response:
            response.raise_for_status()

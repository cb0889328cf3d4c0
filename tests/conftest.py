"""Shared fixtures: real databases, a real receiver on loopback, the served application.

Every test that touches the database gets the ``database_url`` fixture, which runs it on
SQLite (a file in the test's folder) and on PostgreSQL (a database of its own on the
server at 127.0.0.1:5432, dropped afterwards). Set ``PEGABRIDGE_TEST_DATABASES=sqlite``
to run only SQLite, e.g. on a machine without PostgreSQL.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pegabridge.config import Settings
from pegabridge.sandbox import SandboxEndpoint, TokenIssuer

REPO = Path(__file__).resolve().parents[1]


def _find_shared() -> Path:
    """The shared test data: ``$PEGABRIDGE_SHARED``, else a ``shared`` folder beside the
    repository or beside one of its parents (a CI clone may sit a level deeper)."""
    if "PEGABRIDGE_SHARED" in os.environ:
        return Path(os.environ["PEGABRIDGE_SHARED"])
    for parent in REPO.parents:
        candidate = parent / "shared"
        if (candidate / "spec").is_dir():
            return candidate
    return REPO.parent / "shared"


SHARED = _find_shared()
PG_ADMIN_DSN = os.environ.get(
    "PEGABRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)


def shared_path(*parts: str) -> Path:
    """A file of the shared test data, or a skip that says where it was looked for."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (set PEGABRIDGE_SHARED)")
    return path


def _databases() -> list[str]:
    wanted = os.environ.get("PEGABRIDGE_TEST_DATABASES", "sqlite,postgres")
    return [name.strip() for name in wanted.split(",") if name.strip()]


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def _pg_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate(url: str) -> None:
    from pegabridge.store.db import create_engine
    from pegabridge.store.migrate import upgrade

    engine = create_engine(Settings(database_url=url))
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once, not per test)."""
    path = tmp_path_factory.mktemp("template") / "pegabridge.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test's database is created from."""
    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    name = f"pb_template_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(_migrate(f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"))
        yield name
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=_databases())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database with the schema: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "pegabridge.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return

    template_name: str = request.getfixturevalue("postgres_template")
    yield from _postgres_database("pb_test", f' TEMPLATE "{template_name}"')


def _postgres_database(prefix: str, options: str = "") -> Iterator[str]:
    """The URL of a new PostgreSQL database, dropped when the caller is done."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"{options}'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=_databases())
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database without any schema, for migration tests: SQLite or PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return

    if not _postgres_reachable():
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    yield from _postgres_database("pb_empty")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings for a test: its own var folder and database, waits cut short."""
    return Settings(
        var_dir=tmp_path / "var",
        database_url=database_url,
        secret_key="test-secret-key",
        sqlite_synchronous="NORMAL",
        poll_interval_s=0.05,
        retry_base_s=0.05,
        retry_max_delay_s=0.2,
        retry_max_age_s=60.0,
        retry_jitter=0.0,
        circuit_threshold=1000,
        circuit_probe_s=0.1,
        lease_s=5.0,
    )


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxEndpoint]:
    """The trial endpoint on a loopback port; user ``pega``, password ``s3cret``."""
    endpoint = SandboxEndpoint("pega", "s3cret")
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


CLIENT_ID = "pegabridge-client"
CLIENT_SECRET = "Cl13nt-s3cret-of-the-registration"  # distinctive, to find any leak


@pytest.fixture
async def issuer(sandbox: SandboxEndpoint) -> AsyncIterator[TokenIssuer]:
    """A token endpoint on loopback (client ``CLIENT_ID``, secret ``CLIENT_SECRET``)
    whose bearer tokens the sandbox accepts."""
    tokens = TokenIssuer(CLIENT_ID, CLIENT_SECRET)
    await tokens.start()
    sandbox.issuer = tokens
    try:
        yield tokens
    finally:
        await tokens.stop()


@dataclass
class Served:
    """The application served by uvicorn on a loopback port."""

    base_url: str
    app: object


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    """pegabridge's web application with its delivery workers, on real HTTP."""
    from pegabridge.web.app import create_app

    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line of the test, as the service writes it (JSON, DEBUG and up)."""
    from pegabridge import logs

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet = [logging.getLogger(n) for n in ("aiosqlite", "sqlalchemy", "asyncio")]
    quiet_levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for q, old in zip(quiet, quiet_levels, strict=True):
            q.setLevel(old)


def _spec_fields(text: str) -> dict[str, list[tuple[str, str]]]:
    """Per metric, (field, JSON type) in the order of the spec's tables."""
    metrics = re.findall(r"^\| `(\w+)` \|", text.split("## Fields every")[0], re.M)
    fields: dict[str, list[tuple[str, str]]] = {m: [] for m in metrics}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading, _, body = section.partition("\n")
        if "fields" not in heading.lower():
            continue
        named = re.findall(r"`(\w+)`", heading) or metrics
        rows = re.findall(r"^\| (`.+?) \| (.+?) \| .* \|$", body, re.M)
        for names, json_type in rows:
            for name in re.findall(r"`(\w+)`", names):
                for metric in named:
                    fields[metric].append((name, json_type.replace("`", "")))
    return fields


@pytest.fixture(scope="session")
def spec_fields() -> dict[str, list[tuple[str, str]]]:
    """The spec's field tables, per metric, in table order (skips without the spec)."""
    return _spec_fields(shared_path("spec", "interaction-format.md").read_text())


@dataclass
class PegaApp:
    """Portal 1746 with brands 1 and 2 on the served app; installs the app on demand."""

    served: Served
    sandbox: SandboxEndpoint
    api_key: str = ""

    @property
    def runtime(self) -> Any:
        return self.served.app.state.runtime  # type: ignore[attr-defined]

    async def install(
        self, password: str = "s3cret", activities: str = "", brand_id: int = 1
    ) -> int:
        """Install the app for the brand towards the sandbox; waits for its lane."""
        from pegabridge.events.metrics import parse_activities
        from pegabridge.installs import service

        values = service.InstallSettings(
            endpoint_url=self.sandbox.url,
            username="pega",
            password=password,
            activities=parse_activities(
                activities
                or "broadcasts,opens,clicks,bounces,complaints,unsubscribes,conversions"
            ),
        )
        return await self.install_with(values, brand_id)

    async def install_with(self, values: Any, brand_id: int = 1) -> int:
        """Install the app for the brand with these settings; waits for its lane."""
        from pegabridge.installs import service

        installation = await self.runtime.committer.run(
            lambda conn: service.save_installation(
                conn, self.runtime.vault, 1746, brand_id, values, activate=True
            )
        )
        self.runtime.delivery.wake()
        for _ in range(500):
            if installation.id in self.runtime.delivery.lane_stats():
                break
            await asyncio.sleep(0.01)
        return int(installation.id)


@pytest.fixture
async def pega_app(served: Served, sandbox: SandboxEndpoint) -> PegaApp:
    """The served app with portal 1746, brands 1 and 2 and an API key of the portal."""
    from pegabridge.installs import service

    app = PegaApp(served, sandbox)

    async def setup(conn: Any) -> str:
        await service.create_portal(conn, 1746, "mokup")
        await service.create_brand(conn, 1746, 1, "Mok-Up")
        await service.create_brand(conn, 1746, 2, "Other brand")
        return await service.create_api_key(conn, 1746)

    app.api_key = await app.runtime.committer.run(setup)
    return app

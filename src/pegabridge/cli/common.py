"""What the commands share: running async code and opening the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.config import get_settings
from pegabridge.installs.service import InstallError
from pegabridge.installs.vault import Vault, VaultError, vault_for
from pegabridge.store.db import create_engine
from pegabridge.store.migrate import upgrade

T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error; the caller raises the returned exit."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def run(coroutine: Awaitable[T]) -> T:
    """Run a coroutine to its end, turning known errors into a clear message."""
    try:
        return asyncio.run(_wrap(coroutine))
    except (InstallError, VaultError, ValueError) as exc:
        raise fail(str(exc)) from None


async def _wrap(coroutine: Awaitable[T]) -> T:
    return await coroutine


async def in_transaction(
    operation: Callable[[AsyncConnection, Vault], Awaitable[T]],
) -> T:
    """Run ``operation`` in one transaction of the configured database (migrated)."""
    settings = get_settings()
    engine = create_engine(settings)
    try:
        await upgrade(engine)
        vault = vault_for(settings)
        async with engine.begin() as conn:
            return await operation(conn, vault)
    finally:
        await engine.dispose()

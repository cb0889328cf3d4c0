"""The HTTP side of delivery: one keep-alive session per installation's endpoint.

aiohttp is the client, chosen by measurement: see the side-by-side run of
``bench/bench_http_clients.py`` and its figures in ``docs/benchmarks.md``.

An endpoint is authenticated by HTTP Basic or, for an OAuth 2.0 client, by a bearer
token from :mod:`pegabridge.delivery.oauth`. A 401 to a bearer token gets one new
token and one more try of the same event before it counts as a refusal: the token may
have been revoked, or the endpoint's clock may run ahead of ours.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import socket
import ssl
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from pegabridge.config import get_settings
from pegabridge.delivery.oauth import AccessToken, TokenError, TokenSource
from pegabridge.delivery.verdict import AttemptResult
from pegabridge.installs.endpoint_guard import EndpointGuard, EndpointRefused
from pegabridge.installs.service import OAuthClient

EXCERPT_CHARS = 300
USER_AGENT = "pegabridge/0.1 (+interaction relay)"


def basic_auth_header(username: str, password: str) -> str:
    """The ``Authorization`` value of RFC 7617 Basic auth, with UTF-8 credentials."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to POST the events of one installation."""

    url: str
    username: str
    password: str = field(repr=False)
    extra_headers: dict[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 15.0
    concurrency: int = 16
    # The address policy; ``None`` takes the one of this process's settings.
    guard: EndpointGuard | None = None
    # With an OAuth 2.0 client, bearer tokens replace Basic authentication.
    oauth: OAuthClient | None = None
    # Only for the log lines of the token source.
    installation_id: int | None = None

    def headers(self) -> dict[str, str]:
        """The headers of every POST; with OAuth, the token is added per request."""
        headers = dict(self.extra_headers)
        if self.oauth is None:
            headers["Authorization"] = basic_auth_header(self.username, self.password)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        return headers


class EndpointClient:
    """Sends one JSON message per POST to an endpoint, over reused connections."""

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self._headers = config.headers()
        self._session: aiohttp.ClientSession | None = None
        self._guard = config.guard or EndpointGuard.from_settings(get_settings())
        self.tokens = (
            TokenSource(config.oauth, config.installation_id) if config.oauth else None
        )
        # IP literals never reach the resolver, so they are checked here; the URLs and
        # the guard do not change for the life of a client, so once is enough.
        self._literal_refusal = _literal_refusal(self._guard, config.url)
        if config.oauth and not self._literal_refusal:
            refusal = _literal_refusal(self._guard, config.oauth.token_url)
            self._literal_refusal = refusal and f"The token URL: {refusal}"

    @property
    def uses_oauth(self) -> bool:
        """Whether requests carry OAuth 2.0 bearer tokens rather than Basic auth."""
        return self.tokens is not None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.concurrency,
                keepalive_timeout=30,
                ttl_dns_cache=60,
                resolver=GuardedResolver(self._guard),
            )
            timeout = aiohttp.ClientTimeout(
                total=self.config.request_timeout_s,
                sock_connect=self.config.connect_timeout_s,
            )
            # The token endpoint shares the connections and the guarded resolver, so
            # its address is checked at every resolution too.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=timeout,
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def post(self, payload: str) -> AttemptResult:
        """POST ``payload`` and say what came back; never raises.

        Network trouble, or a request that cannot be built, is in the result.
        """
        started = time.perf_counter()
        if self._literal_refusal:
            return AttemptResult(None, _ms_since(started), error=self._literal_refusal)
        try:
            return await self._post_authorized(self._open(), payload, started)
        except TokenError as exc:
            return AttemptResult(
                None,
                _ms_since(started),
                error=exc.message,
                token_refused=exc.pauses,
            )
        except TimeoutError as exc:
            return AttemptResult(None, _ms_since(started), error=_describe(exc))
        except EndpointRefused as exc:
            return AttemptResult(None, _ms_since(started), error=str(exc)[:300])
        except aiohttp.ClientError as exc:
            return AttemptResult(None, _ms_since(started), error=_describe(exc))
        except ValueError as exc:
            # aiohttp refuses with a ValueError a request it cannot build, such as a
            # URL that carries credentials beside the Authorization header. The event
            # stays due, and the reason shows in its attempts.
            error = f"the request could not be built: {exc}"
            return AttemptResult(None, _ms_since(started), error=error[:EXCERPT_CHARS])

    async def _post_authorized(
        self, session: aiohttp.ClientSession, payload: str, started: float
    ) -> AttemptResult:
        if self.tokens is None:
            return await self._send(session, payload, self._headers, started)

        token = await self.tokens.token(session)
        result = await self._send(session, payload, self._bearer(token), started)
        if result.status_code != 401:
            return result

        self.tokens.forget(token)
        token = await self.tokens.token(session)
        return await self._send(session, payload, self._bearer(token), started)

    def _bearer(self, token: AccessToken) -> dict[str, str]:
        return {**self._headers, "Authorization": token.authorization}

    async def _send(
        self,
        session: aiohttp.ClientSession,
        payload: str,
        headers: dict[str, str],
        started: float,
    ) -> AttemptResult:
        # A redirect is an answer, not a delivery: followed, a POST turns into a GET
        # of (say) a sign-in page whose 200 would mark the event delivered.
        async with session.post(
            self.config.url,
            data=payload.encode(),
            headers=headers,
            allow_redirects=False,
        ) as response:
            body = await response.content.read(4096)
            return AttemptResult(
                status_code=response.status,
                duration_ms=_ms_since(started),
                response_excerpt=_excerpt(body),
                retry_after=response.headers.get("Retry-After"),
            )

    async def close(self) -> None:
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _literal_refusal(guard: EndpointGuard, url: str) -> str:
    try:
        guard.check_literal(url)
    except EndpointRefused as exc:
        return str(exc)[:300]
    return ""


class GuardedResolver(AbstractResolver):
    """Resolves names as aiohttp does, then refuses addresses the guard forbids.

    The check happens at every resolution, so a DNS answer that changed since the
    endpoint was saved cannot point the delivery at a private or metadata address.
    """

    def __init__(self, guard: EndpointGuard) -> None:
        self._guard = guard
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        try:
            self._guard.check_addresses(host, [r["host"] for r in results])
        except EndpointRefused as exc:
            # aiohttp turns an OSError from a resolver into a connection error.
            raise OSError(errno.EACCES, str(exc)) from exc
        return results

    async def close(self) -> None:
        await self._inner.close()


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    return text[:EXCERPT_CHARS]


def _describe(exc: BaseException) -> str:
    return describe_failure(exc)[1]


def describe_failure(exc: BaseException, host: str = "") -> tuple[str, str]:
    """A connection failure as (kind, sentence a marketer can act on).

    The kinds are ``timed_out``, ``certificate_not_trusted``,
    ``name_does_not_resolve``, ``connection_refused`` and ``other_error``.
    """
    refusal = _cause(exc, EndpointRefused)
    if refusal is not None:
        return "address_not_allowed", str(refusal)[:300]
    if isinstance(exc, TimeoutError):
        return "timed_out", (
            "The endpoint did not answer in time. Check the URL and that the server "
            "accepts connections from this machine."
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError) or _has_cause(
        exc, ssl.SSLCertVerificationError
    ):
        return "certificate_not_trusted", (
            "The server's certificate is not trusted (expired, self-signed, or for "
            "another name). Pega needs a certificate from a trusted authority."
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or _has_cause(
        exc, socket.gaierror
    ):
        name = host or getattr(exc, "host", "") or "the endpoint's name"
        return "name_does_not_resolve", (
            f"The name {name} does not resolve to an address. Check the spelling."
        )
    if _has_cause(exc, ConnectionRefusedError):
        return "connection_refused", (
            "The server refused the connection: nothing listens on that port, or a "
            "firewall turned us away."
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "other_error", "The server closed the connection without an answer."
    return "other_error", f"The connection failed ({type(exc).__name__})."


def _has_cause(exc: BaseException, kind: type[BaseException]) -> bool:
    return _cause(exc, kind) is not None


def _cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of ``kind`` it was raised from."""
    seen: BaseException | None = exc
    for _depth in range(8):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        wrapped = getattr(seen, "os_error", None)
        if isinstance(wrapped, kind):
            return wrapped
        seen = seen.__cause__ or seen.__context__
    return None


async def close_all(clients: list[EndpointClient]) -> None:
    """Close many clients at once."""
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

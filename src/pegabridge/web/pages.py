"""The pages around the wizard: first start, sign-in, the app store and administration.

Shared page helpers live here too: rendering with the signed-in account, reading a
form with its CSRF token checked, and finding a brand the account may see. Every form
is a plain POST that answers with a redirect (or the form again, with the errors beside
the fields), so the pages work without JavaScript.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from pegabridge.events.metrics import ACTIVITY_DESCRIPTIONS, Activity
from pegabridge.installs import service
from pegabridge.installs.service import Installation, InstallError
from pegabridge.store.tables import brands, portals
from pegabridge.web import auth
from pegabridge.web.runtime import Runtime

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["sentence"] = lambda text: str(text)[:1].upper() + str(text)[1:]
templates.env.filters["timestamp"] = lambda seconds, fmt="%Y-%m-%d %H:%M:%S": (
    dt.datetime.fromtimestamp(seconds, dt.UTC).strftime(fmt)
)
router = APIRouter(include_in_schema=False)

NOTICES = {
    "welcome": "Welcome. Add a portal and a brand here unless they exist already, "
    "then install the Pega app from Apps.",
    "signed-out": "You are signed out.",
    "installed": "The Pega app is installed: events are sent from now on.",
    "saved": "Saved.",
    "paused": "Paused: events wait until you resume.",
    "resumed": "Resumed: waiting events are on their way.",
    "not-changed": "Nothing changed: it was already in that state.",
    "uninstalled": "The Pega app was uninstalled.",
    "portal-created": "Portal created.",
    "brand-created": "Brand created.",
    "user-created": "Account created.",
}


class PageError(Exception):
    """A page that cannot be shown or a request that cannot be done; nothing changed."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


class SignInRequired(Exception):
    """The page needs a signed-in account."""


@dataclass(frozen=True)
class BrandView:
    """A brand the signed-in account may see, with its portal and Pega installation."""

    portal_id: int
    portal_name: str
    brand_id: int
    brand_name: str
    installation: Installation | None

    @property
    def base_url(self) -> str:
        return f"/brands/{self.portal_id}/{self.brand_id}"


@dataclass
class FormState:
    """Values typed into a form and the errors to show beside its fields."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def signer_of(request: Request) -> auth.CookieSigner:
    return auth.CookieSigner(runtime_of(request).vault.derive(b"web-sessions"))


def is_https(request: Request) -> bool:
    settings = runtime_of(request).settings
    return request.url.scheme == "https" or settings.public_base_url.startswith(
        "https://"
    )


# --- Sessions and forms. ---


async def session_of(request: Request) -> auth.Session | None:
    """The signed-in session of the request, if any."""
    if "pb_session" in request.scope:
        cached: auth.Session | None = request.scope["pb_session"]
        return cached
    session = None
    token = signer_of(request).unsign(request.cookies.get(auth.SESSION_COOKIE, ""))
    if token:
        async with runtime_of(request).db.connect() as conn:
            session = await auth.load_session(conn, token)
    request.scope["pb_session"] = session
    return session


async def require_session(request: Request) -> auth.Session:
    """The signed-in session, or a redirect to the sign-in page."""
    session = await session_of(request)
    if session is None:
        raise SignInRequired()
    return session


async def read_form(request: Request, session: auth.Session | None) -> dict[str, str]:
    """The posted form, refused unless its CSRF token is the expected one."""
    form = await request.form()
    values = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    given = values.pop("csrf_token", "")
    if session is not None:
        expected = session.csrf_token
    else:
        nonce = request.cookies.get(auth.PRESESSION_COOKIE, "")
        expected = signer_of(request).presession_token(nonce) if nonce else ""
    if not auth.tokens_match(expected, given):
        log.warning(
            "form refused: bad CSRF token",
            extra={"event": "web.csrf_refused", "path": request.url.path},
        )
        raise PageError(
            403,
            "This form cannot be accepted",
            "The form's security token is missing or does not match your session, "
            "so nothing was changed. Go back, reload the page and try again.",
        )
    return values


async def read_form_lists(request: Request) -> dict[str, list[str]]:
    """Every value of each field of the posted form (for check boxes)."""
    form = await request.form()
    lists: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            lists.setdefault(key, []).append(value)
    return lists


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    session: auth.Session | None,
    status: int = 200,
) -> HTMLResponse:
    """A page with the signed-in account, its CSRF token and any notice."""
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    base = {
        "user": session.user if session else None,
        "csrf_token": session.csrf_token if session else "",
        "notice": notice,
        "activity_descriptions": ACTIVITY_DESCRIPTIONS,
        "activities": list(Activity),
    }
    response = templates.TemplateResponse(
        request, name, {**base, **context}, status_code=status
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def render_presession(
    request: Request, name: str, context: dict[str, Any], status: int = 200
) -> HTMLResponse:
    """A form shown before sign-in, with a double-submit CSRF token."""
    nonce = request.cookies.get(auth.PRESESSION_COOKIE, "")
    if len(nonce) < 16:
        nonce = secrets.token_urlsafe(24)
    token = signer_of(request).presession_token(nonce)
    response = render(request, name, {**context, "csrf_token": token}, None, status)
    response.set_cookie(
        auth.PRESESSION_COOKIE,
        nonce,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    return response


def redirect(url: str, notice: str = "") -> RedirectResponse:
    """A 303 redirect after a POST, optionally with a notice to show."""
    if notice:
        url += ("&" if "?" in url else "?") + f"notice={quote(notice)}"
    return RedirectResponse(url, status_code=303)


# --- Brands the account may see. ---


async def brand_view(
    request: Request, session: auth.Session, portal_id: int, brand_id: int
) -> BrandView:
    """The brand, refused (404, nothing changed) when the account may not see it."""
    refused = PageError(
        404,
        "No such brand",
        f"There is no brand {brand_id} in portal {portal_id} that you can see. "
        "Nothing was changed.",
    )
    if not session.user.may_see(portal_id):
        raise refused
    async with runtime_of(request).db.connect() as conn:
        row = (
            await conn.execute(
                select(portals.c.name.label("portal_name"), brands.c.name)
                .join(portals, portals.c.id == brands.c.portal_id)
                .where(brands.c.portal_id == portal_id, brands.c.id == brand_id)
            )
        ).first()
        if row is None:
            raise refused
        installation = await service.find_installation(conn, portal_id, brand_id)
    return BrandView(portal_id, row.portal_name, brand_id, row.name, installation)


async def visible_brands(request: Request, user: auth.User) -> list[BrandView]:
    """Every brand the account may see, with its installation."""
    query = (
        select(brands.c.portal_id, portals.c.name.label("portal_name"), brands.c.id)
        .add_columns(brands.c.name)
        .join(portals, portals.c.id == brands.c.portal_id)
        .order_by(brands.c.portal_id, brands.c.id)
    )
    if not user.is_operator:
        query = query.where(brands.c.portal_id == (user.portal_id or -1))
    views = []
    async with runtime_of(request).db.connect() as conn:
        for row in await conn.execute(query):
            installation = await service.find_installation(conn, row.portal_id, row.id)
            views.append(
                BrandView(
                    row.portal_id, row.portal_name, row.id, row.name, installation
                )
            )
    return views


# --- First start, sign-in and sign-out. ---


async def announce_setup(runtime: Runtime) -> str | None:
    """Print a one-time setup link while there is no account; the link, if any."""
    async with runtime.db.connect() as conn:
        if await auth.count_users(conn) > 0:
            return None
    token = await runtime.committer.run(
        lambda conn: auth.create_setup_token(conn, runtime.settings.setup_link_ttl_s)
    )
    url = auth.setup_url(runtime.settings, token)
    log.warning(
        "no account yet: open the setup link to create the first administrator",
        extra={"event": "auth.setup_link", "setup_url": url},
    )
    print(f"\n  Create the first administrator: {url}\n", flush=True)
    return url


@router.get("/")
async def home(request: Request) -> Response:
    session = await session_of(request)
    return RedirectResponse("/store" if session else "/signin", status_code=303)


@router.get("/setup/{token}")
async def setup_page(request: Request, token: str) -> Response:
    async with runtime_of(request).db.connect() as conn:
        valid = await auth.setup_token_valid(conn, token)
    if not valid:
        raise PageError(
            404,
            "This setup link does not work",
            "It was used already or it expired. If no account exists yet, restart "
            "pegabridge: it prints a new link.",
        )
    return render_presession(request, "setup.html", {"form": FormState()})


@router.post("/setup/{token}")
async def setup_submit(request: Request, token: str) -> Response:
    values = await read_form(request, None)
    form = FormState({"email": values.get("email", "")[:400]})
    if values.get("password", "") != values.get("password_again", ""):
        form.errors["password_again"] = "the two passwords differ"
        return render_presession(request, "setup.html", {"form": form}, 400)
    runtime = runtime_of(request)
    try:
        user = await runtime.committer.run(
            lambda conn: auth.create_first_admin(
                conn, token, values.get("email", ""), values.get("password", "")
            )
        )
    except auth.AuthError as exc:
        form.errors[exc.field or "form"] = str(exc)
        return render_presession(request, "setup.html", {"form": form}, 400)
    log.info(
        "first administrator created",
        extra={"event": "auth.first_admin", "user_id": user.id},
    )
    return await _signed_in(request, user.id, "/admin?notice=welcome")


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    if await session_of(request):
        return RedirectResponse("/store", status_code=303)
    form = FormState({"next": _safe_next(request.query_params.get("next", ""))})
    return render_presession(request, "signin.html", {"form": form})


@router.post("/signin")
async def signin_submit(request: Request) -> Response:
    values = await read_form(request, None)
    runtime = runtime_of(request)
    email, password = values.get("email", ""), values.get("password", "")
    result = await runtime.committer.run(
        lambda conn: auth.authenticate(conn, email, password, runtime.settings)
    )
    target = _safe_next(values.get("next", "")) or "/store"
    if result.user is None:
        log.info("sign-in refused", extra={"event": "auth.signin_refused"})
        form = FormState({"email": email[:320], "next": target})
        form.errors["form"] = result.message
        return render_presession(request, "signin.html", {"form": form}, 400)
    log.info("signed in", extra={"event": "auth.signed_in", "user_id": result.user.id})
    return await _signed_in(request, result.user.id, target)


async def _signed_in(request: Request, user_id: int, target: str) -> Response:
    runtime = runtime_of(request)
    token = await runtime.committer.run(
        lambda conn: auth.create_session(
            conn, user_id, runtime.settings.session_max_age_s
        )
    )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        signer_of(request).sign(token),
        max_age=int(runtime.settings.session_max_age_s),
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )
    response.delete_cookie(auth.PRESESSION_COOKIE)
    return response


def _safe_next(target: str) -> str:
    # Only a path on this site: never another host (an open redirect).
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target[:500]
    return ""


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = await require_session(request)
    await read_form(request, session)
    await runtime_of(request).committer.run(
        lambda conn: auth.end_session(conn, session.token_hash)
    )
    response = redirect("/signin", "signed-out")
    response.delete_cookie(auth.SESSION_COOKIE)
    return response


# --- The store. ---


@router.get("/store")
async def store(request: Request) -> Response:
    session = await require_session(request)
    views = await visible_brands(request, session.user)
    return render(request, "store.html", {"brands": views}, session)


# --- Administration. ---


def _require_admin(session: auth.Session) -> None:
    if not session.user.is_admin:
        raise PageError(
            403, "Administrators only", "Ask an administrator of your portal."
        )


async def _admin_context(request: Request, user: auth.User) -> dict[str, Any]:
    portal_filter = None if user.is_operator else user.portal_id
    async with runtime_of(request).db.connect() as conn:
        query = select(portals.c.id, portals.c.name).order_by(portals.c.id)
        if portal_filter is not None:
            query = query.where(portals.c.id == portal_filter)
        portal_rows = [(r.id, r.name) for r in await conn.execute(query)]
        accounts = await auth.list_users(conn, portal_filter)
    return {
        "portals": portal_rows,
        "brands": await visible_brands(request, user),
        "accounts": accounts,
        "forms": {k: FormState() for k in ("portal", "brand", "user", "apikey")},
    }


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    session = await require_session(request)
    _require_admin(session)
    context = await _admin_context(request, session.user)
    return render(request, "admin.html", context, session)


async def _admin_retry(
    request: Request, session: auth.Session, which: str, form: FormState
) -> Response:
    context = await _admin_context(request, session.user)
    context["forms"][which] = form
    return render(request, "admin.html", context, session, 400)


def _int_field(values: dict[str, str], name: str, form: FormState) -> int:
    text = values.get(name, "").strip()
    if not text.isdigit() or len(text) > 18 or int(text) <= 0:
        form.errors[name] = "enter a positive whole number"
        return 0
    return int(text)


def _name_field(values: dict[str, str], name: str, form: FormState) -> str:
    text = values.get(name, "").strip()
    if not text or len(text) > 200:
        form.errors[name] = "enter a name of 1 to 200 characters"
    return text


@router.post("/admin/portals")
async def admin_create_portal(request: Request) -> Response:
    session = await require_session(request)
    values = await read_form(request, session)
    if not session.user.is_operator:
        raise PageError(403, "Operators only", "Only the platform operator can.")
    form = FormState(values)
    portal_id = _int_field(values, "id", form)
    name = _name_field(values, "name", form)
    if not form.errors:
        try:
            await runtime_of(request).committer.run(
                lambda conn: service.create_portal(conn, portal_id, name)
            )
        except InstallError as exc:
            form.errors["id"] = str(exc)
    if form.errors:
        return await _admin_retry(request, session, "portal", form)
    return redirect("/admin", "portal-created")


@router.post("/admin/brands")
async def admin_create_brand(request: Request) -> Response:
    session = await require_session(request)
    values = await read_form(request, session)
    _require_admin(session)
    form = FormState(values)
    portal_id = _int_field(values, "portal_id", form)
    brand_id = _int_field(values, "id", form)
    name = _name_field(values, "name", form)
    if portal_id and not session.user.may_see(portal_id):
        form.errors["portal_id"] = "you can add brands to your own portal only"
    if not form.errors:
        try:
            await runtime_of(request).committer.run(
                lambda conn: service.create_brand(conn, portal_id, brand_id, name)
            )
        except InstallError as exc:
            form.errors["portal_id" if exc.field == "portal" else "id"] = str(exc)
    if form.errors:
        return await _admin_retry(request, session, "brand", form)
    return redirect("/admin", "brand-created")


@router.post("/admin/users")
async def admin_create_user(request: Request) -> Response:
    session = await require_session(request)
    values = await read_form(request, session)
    _require_admin(session)
    form = FormState({k: v for k, v in values.items() if k != "password"})
    portal_id = _int_field(values, "portal_id", form)
    if portal_id and not session.user.may_see(portal_id):
        form.errors["portal_id"] = "you can add accounts to your own portal only"
    if not form.errors:
        try:
            await runtime_of(request).committer.run(
                lambda conn: _create_portal_user(conn, values, portal_id)
            )
        except (auth.AuthError, InstallError) as exc:
            form.errors[getattr(exc, "field", "") or "email"] = str(exc)
    if form.errors:
        return await _admin_retry(request, session, "user", form)
    return redirect("/admin", "user-created")


async def _create_portal_user(
    conn: Any, values: dict[str, str], portal_id: int
) -> auth.User:
    await service.require_portal(conn, portal_id)
    return await auth.create_user(
        conn,
        values.get("email", ""),
        values.get("password", ""),
        portal_id=portal_id,
        is_admin=values.get("is_admin") == "on",
    )


@router.post("/admin/api-keys")
async def admin_create_api_key(request: Request) -> Response:
    session = await require_session(request)
    values = await read_form(request, session)
    _require_admin(session)
    form = FormState(values)
    portal_id = _int_field(values, "portal_id", form)
    label = values.get("label", "").strip()[:200]
    if portal_id and not session.user.may_see(portal_id):
        form.errors["portal_id"] = "you can make keys for your own portal only"
    key = ""
    if not form.errors:
        try:
            key = await runtime_of(request).committer.run(
                lambda conn: service.create_api_key(conn, portal_id, label)
            )
        except InstallError as exc:
            form.errors["portal_id"] = str(exc)
    if form.errors:
        return await _admin_retry(request, session, "apikey", form)
    context = await _admin_context(request, session.user)
    return render(
        request,
        "admin.html",
        {**context, "new_key": key, "new_key_portal": portal_id},
        session,
    )


# --- Wiring into the application. ---


def _is_api(path: str) -> bool:
    return path.startswith(("/api/", "/t/", "/metrics", "/healthz", "/readyz"))


def install_web(app: FastAPI) -> None:
    """Add the pages, the installation API and the static files to ``app``."""
    from pegabridge.web import install_api, installation_pages, wizard

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)
    app.include_router(wizard.router)
    app.include_router(installation_pages.router)
    app.include_router(install_api.router)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        session = await session_of(request)
        return render(
            request,
            "error.html",
            {"title": exc.title, "message": exc.message},
            session,
            exc.status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _not_found_page(
        request: Request, exc: StarletteHTTPException
    ) -> Response:
        # A person who mistypes an address gets a page; programs keep the JSON answer.
        wants_page = "text/html" in request.headers.get("accept", "")
        if exc.status_code != 404 or not wants_page or _is_api(request.url.path):
            return await http_exception_handler(request, exc)
        session = await session_of(request)
        message = "There is no page at this address. Check it, or start from the apps."
        return render(
            request,
            "error.html",
            {"title": "Page not found", "message": message},
            session,
            404,
        )

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _exc: SignInRequired) -> Response:
        target = quote(request.url.path, safe="/")
        return RedirectResponse(f"/signin?next={target}", status_code=303)

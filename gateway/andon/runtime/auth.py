"""Who may use the HTTP server: a token of the plant's `[[api_tokens]]` (kept there as its
hash), as `Authorization: Bearer`, or once in a page's URL (`?token=...`, for a kiosk TV with
no keyboard), which then lives on as a cookie. Roles: viewer (the board, reports and read-only
routes) < supervisor (also the console's actions) < admin."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import HTTPException, Request, Response

from andon.config import ApiToken, PlantConfig, Role

COOKIE = "andon_token"
COOKIE_AGE_S = 400 * 86_400  # the longest browsers keep one: a TV is set up once


def token_of(request: Request) -> str | None:
    """The token a request carries: the Authorization header, the URL, or the kiosk cookie."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("token") or request.cookies.get(COOKIE)


def requires(config: PlantConfig, role: Role) -> Callable[[Request], ApiToken]:
    """A dependency: the caller's token entry, if it carries at least `role`; else 401/403."""

    def caller(request: Request) -> ApiToken:
        token = token_of(request)
        entry = config.api_token(token) if token else None
        if entry is None:
            raise HTTPException(
                401, "a valid API token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not entry.allows(role):
            raise HTTPException(403, f"the {entry.role} token {entry.name!r} may not do this")
        return entry

    return caller


def remember_token(response: Response, request: Request) -> Response:
    """A token given in a page's URL becomes the cookie later requests carry (HttpOnly, and
    SameSite=Strict: another site cannot act in the console with it)."""
    token = request.query_params.get("token")
    if token:
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", max_age=COOKIE_AGE_S)
    return response

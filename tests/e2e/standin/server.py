"""A stand-in for authentik's OAuth2/OpenID provider endpoints, for end-to-end tests.

Serves what authentik serves for the applications, providers and scope
mappings of a config document (see config.py), with authentik's paths, status
codes and error bodies:

- ``GET  /application/o/authorize/``            authorization code flow (PKCE plain/S256)
- ``GET|POST /if/flow/default-authentication-flow/``  a plain login form
- ``POST /application/o/token/``                authorization_code and refresh_token grants; password
  and client_credentials with a username and an app password (authentik's app passwords)
- ``POST /application/o/introspect/``           RFC 7662, same-provider tokens only
- ``GET|POST /application/o/userinfo/``
- ``POST /application/o/revoke/``               RFC 7009
- ``GET  /application/o/<slug>/jwks/``, ``/.well-known/openid-configuration``,
  ``/end-session/``
- ``GET  /-/health/live/``, ``/-/health/ready/``
- ``GET  /api/v3/core/users/``, ``/api/v3/core/groups/``   the directory (directory.py), with
  API tokens, roles and test hooks under ``/-/standin/``

Every request is logged to stderr as one line with the decision taken
("introspect: token of another provider -> inactive"). Secrets and tokens are
never logged; tokens appear as a short fingerprint (``fp:...``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import logging
import os
import re
import secrets
import sys
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit

from flask import Flask, Response, g, has_request_context, jsonify, redirect, request, session

from .config import Config, Provider, User, parse_config
from .directory import Directory, register as register_directory
from .mappings import claims_for
from .tokens import (
    ACR_AUTHENTIK_DEFAULT,
    Grant,
    GrantStore,
    SigningKey,
    fingerprint,
    generate_id,
    new_code_value,
    new_refresh_value,
    token_hash,
)

LOGIN_PATH = "/if/flow/default-authentication-flow/"
FORBIDDEN_URI_SCHEMES = {"javascript", "data", "vbscript"}
SESSION_USER = "standin_user"
SESSION_AUTH_TIME = "standin_auth_time"

# authentik/providers/oauth2/errors.py (TokenError, BearerTokenError, RedirectUriError, ClientIdError)
TOKEN_ERRORS = {
    "invalid_request": "The request is otherwise malformed",
    "invalid_client": (
        "Client authentication failed (e.g., unknown client, no client authentication "
        "included, or unsupported authentication method)"
    ),
    "invalid_grant": (
        "The provided authorization grant or refresh token is invalid, expired, revoked, "
        "does not match the redirection URI used in the authorization request, "
        "or was issued to another client"
    ),
    "unauthorized_client": "The authenticated client is not authorized to use this authorization grant type",
    "unsupported_grant_type": "The authorization grant type is not supported by the authorization server",
    "invalid_scope": (
        "The requested scope is invalid, unknown, malformed, or exceeds the scope "
        "granted by the resource owner"
    ),
}
AUTHORIZE_ERRORS = {
    "invalid_request": "The request is otherwise malformed",
    "unsupported_response_type": (
        "The authorization server does not support obtaining an authorization code using this method"
    ),
    "login_required": "The Authorization Server requires End-User authentication",
    "request_not_supported": "The provider does not support use of the request parameter",
}
BEARER_ERRORS = {
    "invalid_token": (
        "The access token provided is expired, revoked, malformed, or invalid for other reasons",
        401,
    ),
    "insufficient_scope": ("The request requires higher privileges than provided by the access token", 403),
}
REDIRECT_URI_ERROR = (
    "Redirect URI Error",
    "The request fails due to a missing, invalid, or mismatching redirection URI (redirect_uri).",
)
CLIENT_ID_ERROR = ("Client ID Error", "The client identifier (client_id) is missing or invalid.")


def stderr_log(line: str) -> None:
    print(f"standin: {line}", file=sys.stderr, flush=True)


class _OAuthError(Exception):
    def __init__(self, error: str, reason: str):
        super().__init__(reason)
        self.error = error
        self.reason = reason


class Standin:
    """State shared by the views: config, signing key, grants."""

    def __init__(self, config: Config, log: Callable[[str], None]):
        self.config = config
        self.log = log
        # Each provider with a signing key has its own key pair (authentik: the
        # provider's certificate-key pair); a rotation replaces one provider's.
        self._keys = {p.client_id: SigningKey() for p in config.providers if p.signing_key}
        self.answer_delay = config.answer_delay_ms / 1000
        self.store = GrantStore()
        self.directory = Directory(config, self.store, log)
        self._requests = 0
        self._lock = threading.Lock()
        # Test instrumentation, not an authentik behaviour: every credential
        # handed out, as JSON lines, so the tests can look for the exact
        # values in the daemons' logs. Off unless the variable names a file.
        self._issued_path = os.environ.get("STANDIN_ISSUED_LOG") or None

    def record_issued(self, kind: str, value: str) -> None:
        if self._issued_path is None:
            return
        with self._lock, open(self._issued_path, "a", encoding="utf-8") as issued:
            issued.write(json.dumps({"kind": kind, "value": value}) + "\n")

    # --- signing keys ---------------------------------------------------------------

    def key(self, provider: Provider) -> SigningKey:
        # Not setdefault(..., SigningKey()): that made (and threw away) a 2048-bit
        # key pair, ~40 ms of CPU under the lock, on every token signed.
        with self._lock:
            key = self._keys.get(provider.client_id)
            if key is None:
                key = self._keys[provider.client_id] = SigningKey()
            return key

    def rotate_key(self, provider: Provider) -> SigningKey:
        """What authentik does when the provider gets another certificate-key pair:
        new tokens are signed with the new key, and the JWKS lists only the new key."""
        with self._lock:
            self._keys[provider.client_id] = key = SigningKey()
        return key

    def encode(self, provider: Provider, payload: dict[str, Any]) -> str:
        return self.key(provider).encode(provider, payload)

    # --- identity helpers -----------------------------------------------------------

    def issuer(self, provider: Provider) -> str:
        """authentik builds the issuer from the request: scheme and Host header
        (so tokens fetched through an internal URL carry that URL)."""
        base = self.config.base_url
        if has_request_context() and request.host:
            base = f"{base.split('://', 1)[0]}://{request.host}"
        if provider.issuer_mode == "global":
            return f"{base}/"
        return f"{base}/application/o/{provider.slug}/"

    @staticmethod
    def subject(provider: Provider, user: User) -> str:
        mode = provider.sub_mode
        if mode == "hashed_user_id":
            return user.uid
        if mode == "user_id":
            return str(user.pk)
        if mode == "user_uuid":
            return user.uuid
        if mode == "user_email":
            return user.email
        if mode == "user_username":
            return user.username
        return str(user.attributes.get("upn", user.uid))  # user_upn

    def id_token_claims(
        self, provider: Provider, user: User, scope: list[str], expires: float, auth_time: int, nonce: str | None
    ) -> dict[str, Any]:
        """authentik's IDToken.new(...).to_dict(): registered claims, then (when
        include_claims_in_id_token) the claims of every granted scope mapping."""
        claims: dict[str, Any] = {
            "iss": self.issuer(provider),
            "sub": self.subject(provider, user),
            "aud": provider.client_id,
            "exp": int(expires),
            "iat": int(time.time()),
            "auth_time": int(auth_time),
            "acr": ACR_AUTHENTIK_DEFAULT,
            "jti": generate_id(),
        }
        if nonce:
            claims["nonce"] = nonce
        if provider.include_claims_in_id_token:
            claims.update(claims_for(provider, user, scope, self.log))
        return claims

    def issue_tokens(
        self,
        provider: Provider,
        user: User,
        scope: list[str],
        auth_time: int,
        access_nonce: str | None,
        refresh_nonce: str | None,
        with_refresh: bool,
    ) -> dict[str, Any]:
        now = time.time()
        access_expires = now + provider.access_token_validity.total_seconds()
        access_claims = self.id_token_claims(provider, user, scope, access_expires, auth_time, access_nonce)
        access_payload = dict(access_claims)
        access_payload["azp"] = provider.client_id
        access_payload["uid"] = generate_id()
        access_value = self.encode(provider, access_payload)
        self.store.add(
            Grant(
                kind="access",
                value=access_value,
                provider_client_id=provider.client_id,
                username=user.username,
                scope=list(scope),
                expires=access_expires,
                auth_time=auth_time,
                nonce=access_nonce,
                id_token=access_claims,
            )
        )
        id_token_payload = dict(access_claims)
        id_token_payload["at_hash"] = token_hash(access_value)
        response: dict[str, Any] = {
            "access_token": access_value,
            "token_type": "Bearer",
            "scope": " ".join(scope),
            "expires_in": int(provider.access_token_validity.total_seconds()),
            "id_token": self.encode(provider, id_token_payload),
        }
        self.record_issued("access_token", access_value)
        self.record_issued("id_token", response["id_token"])
        if with_refresh:
            refresh_expires = now + provider.refresh_token_validity.total_seconds()
            refresh_claims = self.id_token_claims(provider, user, scope, refresh_expires, auth_time, refresh_nonce)
            refresh_claims["at_hash"] = token_hash(access_value)
            refresh_value = new_refresh_value()
            self.store.add(
                Grant(
                    kind="refresh",
                    value=refresh_value,
                    provider_client_id=provider.client_id,
                    username=user.username,
                    scope=list(scope),
                    expires=refresh_expires,
                    auth_time=auth_time,
                    nonce=refresh_nonce,
                    id_token=refresh_claims,
                )
            )
            response["refresh_token"] = refresh_value
            self.record_issued("refresh_token", refresh_value)
        return response

    def maybe_purge(self) -> None:
        with self._lock:
            self._requests += 1
            due = self._requests % 500 == 0
        if due:
            self.store.purge_expired()


# --- small helpers ---------------------------------------------------------------------


def _decide(message: str) -> None:
    previous = getattr(g, "decision", "")
    g.decision = f"{previous}; {message}" if previous else message


def _html_page(title: str, body: str, status: int = 200) -> Response:
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)} - authentik</title></head>\n<body>\n"
        f"<main>\n<h1>{html.escape(title)}</h1>\n{body}\n</main>\n</body></html>\n"
    )
    return Response(page, status=status, mimetype="text/html")


def _bad_request_page(title: str, message: str) -> Response:
    """authentik.lib.views.bad_request_message: generic error page, HTTP 400."""
    return _html_page(title, f"<p>{html.escape(message)}</p>", status=400)


def _token_json(data: dict[str, Any], status: int = 200) -> Response:
    """authentik's TokenResponse: JSON that must never be cached."""
    response = jsonify(data)
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _extract_client_auth() -> tuple[str, str]:
    """HTTP Basic (percent-decoded, RFC 6749 2.3.1) or form fields client_id/client_secret."""
    header = request.headers.get("Authorization", "")
    if re.match(r"^Basic\s{1}.+$", header):
        try:
            decoded = base64.b64decode(header.split()[1]).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, client_secret = decoded.partition(":")
        return unquote(client_id), unquote(client_secret)
    return request.form.get("client_id", ""), request.form.get("client_secret", "")


def _same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _safe_next(target: str | None) -> str | None:
    """Only relative paths back into the OAuth2 endpoints are followed after login."""
    if not target or "\\" in target or any(ord(c) < 0x20 for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/application/o/"):
        return None
    return target


def _pkce_s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").replace("=", "")


def create_app(config: dict | Config, log: Callable[[str], None] | None = None) -> Flask:
    """Build the Flask app for a config (a dict as loaded from JSON, or a parsed Config).

    ``log`` receives one line per request (and startup notes); it defaults to stderr.
    """
    if not isinstance(config, Config):
        config = parse_config(config)
    log = log or stderr_log
    state = Standin(config, log)

    app = Flask(__name__, static_folder=None)
    app.secret_key = secrets.token_bytes(32)
    app.config.update(
        SESSION_COOKIE_NAME="authentik_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.base_url.startswith("https://"),
    )
    app.json.sort_keys = False
    app.extensions["standin"] = state

    for warning in config.warnings:
        log(f"config: {warning}")

    @app.before_request
    def _start() -> None:
        g.decision = ""
        g.request_id = uuid.uuid4().hex  # authentik's RequestIDMiddleware
        state.maybe_purge()
        if state.answer_delay and not request.path.startswith("/-/"):
            time.sleep(state.answer_delay)  # a real authentik takes ~30 ms per answer

    @app.after_request
    def _log_request(response: Response) -> Response:
        if g.get("request_id"):
            response.headers["X-authentik-id"] = g.request_id
        # Path only: query strings may carry tokens (userinfo ?access_token=).
        line = f"{request.method} {request.path} -> {response.status_code}"
        if g.get("decision"):
            line += f" | {g.decision}"
        log(line)
        return response

    @app.errorhandler(405)
    def method_not_allowed(error):  # noqa: ANN001 - werkzeug HTTPException
        _decide(f"{request.method} not allowed here")
        return error

    def current_user() -> User | None:
        username = session.get(SESSION_USER)
        user = config.user_by_username(username) if username else None
        # Django logs a deactivated user out: its backend no longer returns it.
        return user if user is not None and user.is_active else None

    register_directory(app, state.directory, _decide)

    # --- health -----------------------------------------------------------------

    @app.get("/-/health/live/")
    @app.get("/-/health/ready/")
    def health() -> Response:
        return Response("", status=200)

    # --- test hooks (not authentik endpoints) -------------------------------------

    @app.post("/-/standin/applications/<slug>/rotate-signing-key/")
    def rotate_signing_key(slug: str) -> Response:
        provider = provider_for_slug(slug)
        if provider is None or not provider.signing_key:
            _decide(f"rotate signing key: no application {slug!r} with a signing key")
            return Response("Not Found", status=404)
        old = state.key(provider).kid
        new = state.rotate_key(provider).kid
        _decide(f"rotate signing key: {slug}: kid {old} -> {new}")
        return jsonify({"kid": new, "previous_kid": old})

    # --- login flow ---------------------------------------------------------------

    def login_form(next_target: str, error: str | None = None) -> Response:
        action = LOGIN_PATH + ("?" + urlencode({"next": next_target}) if next_target else "")
        error_html = f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else ""
        body = (
            f"{error_html}"
            f'<form method="post" action="{html.escape(action)}">\n'
            '<label for="uid_field">Username or Email</label>\n'
            '<input type="text" id="uid_field" name="uid_field" autocomplete="username" autofocus required>\n'
            '<label for="password">Password</label>\n'
            '<input type="password" id="password" name="password" autocomplete="current-password" required>\n'
            '<button type="submit">Log in</button>\n'
            "</form>"
        )
        return _html_page("Welcome to authentik!", body)

    @app.get("/flows/-/default/authentication/")
    def default_authentication() -> Response:
        target = LOGIN_PATH + (f"?{request.query_string.decode('latin-1')}" if request.query_string else "")
        return redirect(target, code=302)

    @app.route(LOGIN_PATH, methods=["GET", "POST"])
    def login() -> Response:
        next_target = request.args.get("next", "")
        if request.method == "GET":
            _decide("login: form shown")
            return login_form(next_target)
        uid_field = request.form.get("uid_field", "")
        password = request.form.get("password", "")
        user = config.find_user(uid_field)
        if user is None:
            _decide(f"login: unknown user {uid_field!r} -> form again")
            return login_form(next_target, "Failed to authenticate.")
        if not _same_secret(password, user.password):
            _decide(f"login: wrong password for {user.username} -> form again")
            return login_form(next_target, "Invalid password")
        if not user.is_active:
            _decide(f"login: {user.username} is inactive -> form again")
            return login_form(next_target, "Failed to authenticate.")
        session.clear()
        session[SESSION_USER] = user.username
        session[SESSION_AUTH_TIME] = int(time.time())
        target = _safe_next(next_target)
        if target is None:
            _decide(f"login: {user.username} logged in; next {'refused' if next_target else 'missing'} -> /if/user/")
            return redirect("/if/user/", code=302)
        _decide(f"login: {user.username} logged in -> next")
        return redirect(target, code=302)

    @app.get("/if/user/")
    def user_interface() -> Response:
        user = current_user()
        if user is None:
            _decide("user interface: not logged in -> login")
            return redirect(LOGIN_PATH, code=302)
        _decide(f"user interface: {user.username}")
        return _html_page("My applications", f"<p>Logged in as {html.escape(user.name or user.username)}.</p>")

    # --- authorize ------------------------------------------------------------------

    def authorize_error_redirect(redirect_uri: str, error: str, state_value: str | None,
                                 description: str | None = None) -> Response:
        description = description or AUTHORIZE_ERRORS.get(error, error)
        separator = "&" if "?" in redirect_uri else "?"
        uri = f"{redirect_uri}{separator}error={error}&error_description={quote(description)}"
        if state_value:
            uri += f"&state={quote(state_value)}"
        return redirect(uri, code=302)

    @app.get("/application/o/authorize/")
    def authorize() -> Response:
        if len(request.args) < 1:
            _decide("authorize: no parameters -> 404")
            return Response("Not Found", status=404)
        args = request.args
        client_id = args.get("client_id", "")
        redirect_uri = args.get("redirect_uri", "")
        state_value = args.get("state")
        provider = config.provider_by_client_id(client_id)
        if provider is None:
            _decide(f"authorize: unknown client_id {client_id!r} -> Client ID Error")
            return _bad_request_page(*CLIENT_ID_ERROR)
        if not redirect_uri:
            _decide(f"authorize: client {client_id}: missing redirect_uri -> Redirect URI Error")
            return _bad_request_page(*REDIRECT_URI_ERROR)
        if not any(allowed.matches(redirect_uri) for allowed in provider.redirect_uris):
            _decide(
                f"authorize: client {client_id}: redirect_uri {redirect_uri!r} not allowed "
                f"(allowed: {[f'{u.matching_mode}:{u.url}' for u in provider.redirect_uris]}) -> Redirect URI Error"
            )
            return _bad_request_page(*REDIRECT_URI_ERROR)
        if urlsplit(redirect_uri).scheme.lower() in FORBIDDEN_URI_SCHEMES:
            _decide(f"authorize: client {client_id}: forbidden redirect_uri scheme -> Redirect URI Error")
            return _bad_request_page(*REDIRECT_URI_ERROR)
        response_type = args.get("response_type", "")
        if response_type != "code":
            _decide(f"authorize: response_type {response_type!r} not supported by the stand-in "
                    "-> unsupported_response_type")
            return authorize_error_redirect(redirect_uri, "unsupported_response_type", state_value)

        assigned = provider.scope_names
        requested = args.get("scope", "").split()
        if not requested:
            scope = list(dict.fromkeys(assigned))
            notes = ["no scope requested: all assigned"]
        else:
            scope = [s for s in dict.fromkeys(requested) if s in assigned]
            dropped = [s for s in dict.fromkeys(requested) if s not in assigned]
            notes = [f"dropped unassigned scopes {dropped}"] if dropped else []

        code_challenge = args.get("code_challenge")
        code_challenge_method = args.get("code_challenge_method", "plain")
        if code_challenge and code_challenge_method not in ("plain", "S256"):
            _decide(f"authorize: unsupported code_challenge_method {code_challenge_method!r} -> invalid_request")
            return authorize_error_redirect(
                redirect_uri, "invalid_request", state_value,
                f"Unsupported challenge method {code_challenge_method}",
            )
        if args.get("request"):
            _decide("authorize: request object given -> request_not_supported")
            return authorize_error_redirect(redirect_uri, "request_not_supported", state_value)

        prompt = set(args.get("prompt", "").split())
        user = current_user()
        if user is None:
            if "none" in prompt:
                _decide("authorize: prompt=none and not logged in -> login_required")
                return authorize_error_redirect(redirect_uri, "login_required", state_value)
            _decide(f"authorize: client {client_id}: not logged in -> login page")
            return redirect(f"{LOGIN_PATH}?{urlencode({'next': request.full_path})}", code=302)

        if provider.allowed_group is not None and provider.allowed_group not in user.groups:
            _decide(f"authorize: client {client_id}: user {user.username} not in group "
                    f"{provider.allowed_group!r} -> access denied")
            return _html_page(
                "Permission denied",
                "<p>Request has been denied.</p>\n"
                f"<p>Access denied: you are not allowed to access {html.escape(provider.application_name)}.</p>",
                status=200,  # authentik's AccessDeniedResponse is a TemplateResponse (HTTP 200)
            )

        auth_time = int(session.get(SESSION_AUTH_TIME, time.time()))
        code = Grant(
            kind="code",
            value=new_code_value(),
            provider_client_id=provider.client_id,
            username=user.username,
            scope=scope,
            expires=time.time() + provider.access_code_validity.total_seconds(),
            auth_time=auth_time,
            nonce=args.get("nonce"),
            redirect_uri=redirect_uri,
            code_challenge=code_challenge or None,
            code_challenge_method=code_challenge_method if code_challenge else None,
        )
        state.store.add(code)
        state.record_issued("authorization_code", code.value)
        parts = urlsplit(redirect_uri)
        query = parse_qs(parts.query)
        query["code"] = [code.value]
        query["state"] = [state_value or ""]
        target = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        notes.append(f"pkce={code.code_challenge_method or 'none'}")
        _decide(f"authorize: client {client_id}: user {user.username} granted {scope} "
                f"({'; '.join(notes)}) -> code {fingerprint(code.value)}")
        return redirect(target, code=302)

    # --- token ----------------------------------------------------------------------

    @app.route("/application/o/token/", methods=["POST", "OPTIONS"])
    def token() -> Response:
        if request.method == "OPTIONS":
            return _token_json({})
        client_id, client_secret = _extract_client_auth()
        grant_type = request.form.get("grant_type", "")
        try:
            provider = config.provider_by_client_id(client_id)
            if provider is None:
                raise _OAuthError("invalid_client", f"unknown client_id {client_id!r}")
            if grant_type in ("authorization_code", "refresh_token") and provider.client_type == "confidential":
                if not _same_secret(client_secret, provider.client_secret):
                    raise _OAuthError("invalid_client", f"client {client_id}: wrong client secret")
            requested_scope = [s for s in dict.fromkeys(request.form.get("scope", "").split())
                               if s in provider.scope_names]
            if grant_type == "authorization_code":
                return _token_json(code_grant(provider))
            if grant_type == "refresh_token":
                return _token_json(refresh_grant(provider, requested_scope))
            if grant_type in ("client_credentials", "password"):
                return _token_json(client_credentials_grant(provider, grant_type, client_secret, requested_scope))
            raise _OAuthError("unsupported_grant_type", f"grant_type {grant_type!r} not supported")
        except _OAuthError as error:
            _decide(f"token: {error.reason} -> {error.error}")
            # authentik's OAuth2Error.create_dict
            return _token_json({"error": error.error, "error_description": TOKEN_ERRORS[error.error],
                                "request_id": g.request_id}, status=400)

    def client_credentials_grant(provider: Provider, grant_type: str, client_secret: str,
                                 scope: list[str]) -> dict[str, Any]:
        """authentik's providers/oauth2/views/token.py, __post_init_client_credentials:
        `password` is handled exactly like `client_credentials`.

        The client secret is NOT checked here: authentik checks it only for the
        authorization_code and refresh_token grants; for these grants the
        client_id only picks the provider (and its application's policies).
        """
        who = f"{grant_type} (client {provider.client_id})"
        if request.form.get("client_assertion_type", ""):
            raise _OAuthError("invalid_grant", f"{who}: client assertions (JWT) are not implemented by the stand-in")
        username = request.form.get("username", "")
        if username != "":
            return app_password_grant(provider, who, username, request.form.get("password"), scope)
        if client_secret == provider.client_secret:
            raise _OAuthError("invalid_grant", f"{who}: no username; authentik would answer for the provider's "
                                               "generated service account, which the stand-in does not implement")
        # authentik's "workaround": client_secret = base64("username:password").
        try:
            decoded = base64.b64decode(client_secret, validate=True).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise _OAuthError("invalid_grant", f"{who}: no username, and the client secret is not "
                                               "base64(username:password)") from None
        username, _, password = decoded.partition(":")
        return app_password_grant(provider, who, username, password, scope)

    def app_password_grant(provider: Provider, who: str, username: str, password: str | None,
                           scope: list[str]) -> dict[str, Any]:
        """__post_init_client_credentials_creds: an ACTIVE user by username, an unexpired
        app_password token of that user with key=password, then the application's
        policy for that user. Each failure is the same invalid_grant."""
        user = config.user_by_username(username)
        # authentik >= 2025.8.5 / 2025.10.2 looks up the user with is_active=True
        # (CVE-2025-64521: before, a deactivated account's app password still got
        # tokens). The stand-in follows the fixed behaviour.
        if user is None or not user.is_active:
            raise _OAuthError("invalid_grant", f"{who}: no active user {username!r}")
        token, why = state.directory.find_token(password or "", "app_password", user.username)
        if token is None:
            what = why or state.directory.token_summary(password or "")
            raise _OAuthError("invalid_grant", f"{who}: password for {user.username} is no app password of theirs "
                                               f"({what})")
        if provider.allowed_group is not None and provider.allowed_group not in user.groups:
            raise _OAuthError("invalid_grant", f"{who}: {user.username} is not in group {provider.allowed_group!r} "
                                               "(application policy)")
        response = state.issue_tokens(provider, user, scope, int(time.time()),
                                      access_nonce=None, refresh_nonce=None, with_refresh=False)
        _decide(f"token: {who}: app password {token.identifier} of {user.username} (scope {scope}) "
                f"-> access {fingerprint(response['access_token'])}, no refresh token")
        return response

    def code_grant(provider: Provider) -> dict[str, Any]:
        raw_code = request.form.get("code", "")
        redirect_uri = request.form.get("redirect_uri", "")
        code_verifier = request.form.get("code_verifier")
        if not raw_code:
            raise _OAuthError("invalid_grant", "missing code")
        if not any(allowed.matches(redirect_uri) for allowed in provider.redirect_uris):
            raise _OAuthError("invalid_client", f"redirect_uri {redirect_uri!r} not allowed for {provider.client_id}")
        if urlsplit(redirect_uri).scheme.lower() in FORBIDDEN_URI_SCHEMES:
            raise _OAuthError("invalid_request", "forbidden redirect_uri scheme")
        code = state.store.get("code", raw_code)
        if code is None:
            raise _OAuthError("invalid_grant", f"code {fingerprint(raw_code)} unknown or already used")
        if code.is_expired():
            raise _OAuthError("invalid_grant", f"code {fingerprint(raw_code)} expired")
        if code.provider_client_id != provider.client_id:
            raise _OAuthError("invalid_grant", f"code {fingerprint(raw_code)} was issued to another client")
        if redirect_uri != code.redirect_uri:
            # RFC 6749 4.1.3; authentik itself only checks the provider's allowed list.
            raise _OAuthError("invalid_grant", "redirect_uri differs from the one of the authorize request")
        if code.code_challenge:
            if not code_verifier:
                raise _OAuthError("invalid_grant", "PKCE: code_verifier missing")
            try:
                computed = _pkce_s256(code_verifier) if code.code_challenge_method == "S256" else code_verifier
            except UnicodeEncodeError:
                raise _OAuthError("invalid_grant", "PKCE: code_verifier not ASCII") from None
            if not hmac.compare_digest(computed.encode("utf-8"), code.code_challenge.encode("utf-8")):
                raise _OAuthError("invalid_grant", "PKCE: code_verifier does not match code_challenge")
        elif code_verifier:
            raise _OAuthError("invalid_grant", "PKCE: code_verifier given but the code had no code_challenge")
        if not state.store.take_code(code):
            raise _OAuthError("invalid_grant", f"code {fingerprint(raw_code)} already used")
        user = config.user_by_username(code.username)
        with_refresh = "offline_access" in code.scope
        response = state.issue_tokens(
            provider, user, code.scope, code.auth_time,
            access_nonce=code.nonce, refresh_nonce=code.nonce, with_refresh=with_refresh,
        )
        _decide(
            f"token: authorization_code for {user.username} (client {provider.client_id}, scope {code.scope}) "
            f"-> access {fingerprint(response['access_token'])}"
            + (f", refresh {fingerprint(response['refresh_token'])}" if with_refresh else ", no refresh token")
        )
        return response

    def refresh_grant(provider: Provider, requested_scope: list[str]) -> dict[str, Any]:
        raw_token = request.form.get("refresh_token", "")
        if not raw_token:
            raise _OAuthError("invalid_grant", "missing refresh_token")
        refresh = state.store.get("refresh", raw_token)
        if refresh is None or refresh.provider_client_id != provider.client_id:
            other = refresh is not None
            raise _OAuthError(
                "invalid_grant",
                f"refresh token {fingerprint(raw_token)} "
                + ("was issued to another provider" if other else "unknown"),
            )
        if refresh.is_expired():
            raise _OAuthError("invalid_grant", f"refresh token {fingerprint(raw_token)} expired")
        scope = requested_scope or list(refresh.scope)
        if refresh.revoked:
            raise _OAuthError("invalid_grant", f"revoked refresh token {fingerprint(raw_token)} was used")
        unauthorized = [s for s in scope if s not in refresh.scope]
        if unauthorized:
            raise _OAuthError("invalid_scope", f"scope {unauthorized} not granted to the refresh token")
        if "offline_access" not in scope:
            raise _OAuthError("invalid_scope", "offline_access not in the requested scope")
        user = config.user_by_username(refresh.username)
        response = state.issue_tokens(
            provider, user, refresh.scope, refresh.auth_time,
            access_nonce=None, refresh_nonce=refresh.nonce, with_refresh=True,
        )
        state.store.revoke(refresh)
        _decide(
            f"token: refresh_token {fingerprint(raw_token)} for {user.username} (client {provider.client_id}) "
            f"-> access {fingerprint(response['access_token'])}, new refresh "
            f"{fingerprint(response['refresh_token'])}; old refresh token revoked"
        )
        return response

    # --- introspection, revocation ---------------------------------------------------

    def authenticate_provider() -> tuple[Provider | None, str]:
        client_id, client_secret = _extract_client_auth()
        if client_id == client_secret == "":
            return None, "no client credentials"
        provider = config.provider_by_client_id(client_id)
        if provider is None:
            return None, f"unknown client_id {client_id!r}"
        if not _same_secret(client_secret, provider.client_secret):
            return None, f"wrong client secret for {client_id}"
        return provider, ""

    def find_token(raw: str, provider: Provider) -> tuple[Grant | None, str]:
        for kind in ("access", "refresh"):
            grant = state.store.get(kind, raw)
            if grant is None:
                continue
            if grant.provider_client_id != provider.client_id:
                return None, f"{kind} token {fingerprint(raw)} of another provider ({grant.provider_client_id})"
            return grant, ""
        return None, f"unknown token {fingerprint(raw)}"

    @app.post("/application/o/introspect/")
    def introspect() -> Response:
        provider, why = authenticate_provider()
        if provider is None:
            _decide(f"introspect: client authentication failed ({why}) -> inactive")
            return _token_json({"active": False})
        raw = request.form.get("token", "")
        grant, why = find_token(raw, provider)
        if grant is None:
            _decide(f"introspect: {why} -> inactive")
            return _token_json({"active": False})
        if grant.is_expired():
            _decide(f"introspect: {grant.kind} token {fingerprint(raw)} expired -> inactive")
            return _token_json({"active": False})
        if not grant.has_openid:
            _decide(f"introspect: {grant.kind} token {fingerprint(raw)} has no openid scope (no id_token) -> inactive")
            return _token_json({"active": False})
        body = dict(grant.id_token)
        body["active"] = not grant.is_expired() and not grant.revoked
        body["scope"] = " ".join(grant.scope)
        body["client_id"] = provider.client_id
        _decide(
            f"introspect: {grant.kind} token {fingerprint(raw)} of {grant.username} (client {provider.client_id}) "
            f"-> {'active' if body['active'] else 'inactive (revoked)'}"
        )
        return _token_json(body)

    @app.post("/application/o/revoke/")
    def revoke() -> Response:
        provider, why = authenticate_provider()
        if provider is None:
            _decide(f"revoke: client authentication failed ({why}) -> invalid_client")
            return _token_json({"error": "invalid_client", "error_description": TOKEN_ERRORS["invalid_client"]},
                               status=401)
        raw = request.form.get("token", "")
        grant, why = find_token(raw, provider)
        if grant is None:
            _decide(f"revoke: {why} -> nothing to do")
            return _token_json({})
        state.store.delete(grant)
        _decide(f"revoke: {grant.kind} token {fingerprint(raw)} of {grant.username} deleted")
        return _token_json({})

    # --- userinfo -------------------------------------------------------------------

    def bearer_error(code: str, why: str) -> Response:
        description, status = BEARER_ERRORS[code]
        _decide(f"userinfo: {why} -> {status} {code}")
        response = Response("", status=status)
        response.headers["WWW-Authenticate"] = f'error="{code}", error_description="{description}"'
        return response

    @app.route("/application/o/userinfo/", methods=["GET", "POST", "OPTIONS"])
    def userinfo() -> Response:
        if request.method == "OPTIONS":
            return _token_json({})
        header = request.headers.get("Authorization", "")
        if re.match(r"^[Bb]earer\s{1}.+$", header):
            raw = header.split()[1]
        elif "access_token" in request.form:
            raw = request.form.get("access_token", "")
        elif "access_token" in request.args:
            raw = request.args.get("access_token", "")
        else:
            raw = ""
        if not raw:
            return bearer_error("invalid_token", "no token passed")
        grant = state.store.get("access", raw)
        if grant is None:
            return bearer_error("invalid_token", f"unknown token {fingerprint(raw)}")
        if grant.is_expired():
            return bearer_error("invalid_token", f"token {fingerprint(raw)} expired")
        if grant.revoked:
            return bearer_error("invalid_token", f"revoked token {fingerprint(raw)} was used")
        if not grant.has_openid:
            return bearer_error("insufficient_scope", f"token {fingerprint(raw)} lacks the openid scope")
        provider = config.provider_by_client_id(grant.provider_client_id)
        user = config.user_by_username(grant.username)
        claims: dict[str, Any] = {"sub": grant.id_token.get("sub")}
        claims.update(claims_for(provider, user, grant.scope, log))
        if grant.id_token.get("nonce"):
            claims["nonce"] = grant.id_token["nonce"]
        _decide(f"userinfo: token {fingerprint(raw)} of {user.username} (client {provider.client_id}) "
                f"-> claims {sorted(claims)}")
        return _token_json(claims)

    # --- per-application endpoints ---------------------------------------------------

    def provider_for_slug(slug: str) -> Provider | None:
        app_ = config.application_by_slug(slug)
        return app_.provider if app_ else None

    @app.get("/application/o/<slug>/jwks/")
    def jwks(slug: str) -> Response:
        provider = provider_for_slug(slug)
        if provider is None:
            _decide(f"jwks: unknown application {slug!r}")
            return Response("Not Found", status=404)
        body: dict[str, Any] = {"keys": [state.key(provider).jwk()]} if provider.signing_key else {}
        response = jsonify(body)
        response.headers["Access-Control-Allow-Origin"] = "*"
        _decide(f"jwks: {slug} -> {len(body.get('keys', []))} key(s)")
        return response

    @app.get("/application/o/<slug>/.well-known/openid-configuration")
    def openid_configuration(slug: str) -> Response:
        provider = provider_for_slug(slug)
        if provider is None:
            _decide(f"discovery: unknown application {slug!r}")
            return Response("Not Found", status=404)
        base = config.base_url
        scopes = list(dict.fromkeys(provider.scope_names))
        if "openid" not in scopes:
            scopes.append("openid")
        info = {
            "issuer": state.issuer(provider),
            "authorization_endpoint": f"{base}/application/o/authorize/",
            "token_endpoint": f"{base}/application/o/token/",
            "userinfo_endpoint": f"{base}/application/o/userinfo/",
            "end_session_endpoint": f"{base}/application/o/{slug}/end-session/",
            "introspection_endpoint": f"{base}/application/o/introspect/",
            "revocation_endpoint": f"{base}/application/o/revoke/",
            # The stand-in implements the authorization code flow (and the app password grants).
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "jwks_uri": f"{base}/application/o/{slug}/jwks/",
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", "password"],
            "id_token_signing_alg_values_supported": ["RS256" if provider.signing_key else "HS256"],
            "subject_types_supported": ["public"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "acr_values_supported": [ACR_AUTHENTIK_DEFAULT],
            "scopes_supported": scopes,
            "request_parameter_supported": False,
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "amr", "nonce"],
            "claims_parameter_supported": False,
            "code_challenge_methods_supported": ["plain", "S256"],
        }
        _decide(f"discovery: {slug}")
        return jsonify(info)

    @app.get("/application/o/<slug>/end-session/")
    def end_session(slug: str) -> Response:
        app_ = config.application_by_slug(slug)
        if app_ is None:
            _decide(f"end-session: unknown application {slug!r}")
            return Response("Not Found", status=404)
        user = current_user()
        session.clear()
        _decide(f"end-session: {slug}: {'logged out ' + user.username if user else 'no session'}")
        return _html_page("You've logged out of " + app_.name, "<p>You have been logged out.</p>")

    return app


def make_server(config: dict | Config, log: Callable[[str], None] | None = None):
    """A werkzeug HTTPS server (threaded) for the config's listen address and TLS files.

    Call ``serve_forever()`` on it; ``shutdown()`` from another thread stops it.
    """
    from werkzeug.serving import make_server as _make_server

    if not isinstance(config, Config):
        config = parse_config(config)
    if not config.cert_file or not config.key_file:
        raise ValueError("config.tls.cert_file and config.tls.key_file are required to serve HTTPS")
    log = log or stderr_log
    # Our own per-request line replaces werkzeug's access log, which would print
    # query strings (userinfo accepts ?access_token=).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(config, log)
    server = _make_server(
        config.listen_host,
        config.listen_port,
        app,
        threaded=True,
        ssl_context=(config.cert_file, config.key_file),
    )
    state: Standin = app.extensions["standin"]
    log(
        f"listening on https://{config.listen_host}:{server.server_port} (base_url {config.base_url}); "
        f"applications {[a.slug for a in config.applications]}; signing key kids "
        f"{ {a.slug: state.key(a.provider).kid for a in config.applications if a.provider.signing_key} }"
    )
    return server


def serve(config: dict | Config, log: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted."""
    server = make_server(config, log)
    try:
        server.serve_forever()
    finally:
        server.server_close()

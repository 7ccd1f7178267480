"""Test-side helpers that talk to authentik (or the stand-in) over HTTP, as a
browser and a relying party would: no backdoor.

    tokens = login_and_get_tokens(base_url, client_id, client_secret, redirect_uri,
                                  "alice", "pw", verify="/path/ca.pem")
    info = introspect(base_url, tokens["access_token"], client_id, client_secret, verify=...)
    new_tokens = refresh(base_url, client_id, client_secret, tokens["refresh_token"], verify=...)

``base_url`` is where this process reaches the server (e.g. a published port
on 127.0.0.1); it may differ from the issuer the server puts in tokens.
Uses ``requests``; the server package itself never imports this module.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urljoin, urlsplit

import requests

DEFAULT_SCOPE = "openid email offline_access dovecotprofile"
AUTHORIZE_PATH = "/application/o/authorize/"
TOKEN_PATH = "/application/o/token/"
INTROSPECT_PATH = "/application/o/introspect/"
USERINFO_PATH = "/application/o/userinfo/"
REVOKE_PATH = "/application/o/revoke/"


class FlowError(RuntimeError):
    """A step of the browser/RP flow did not go as a successful login would."""

    def __init__(self, message: str, response: requests.Response | None = None):
        super().__init__(message)
        self.response = response


class TokenEndpointError(FlowError):
    """The token endpoint answered with an error (``.status``, ``.body``)."""

    def __init__(self, response: requests.Response):
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        super().__init__(f"token endpoint answered HTTP {response.status_code}: {body}", response)
        self.status = response.status_code
        self.body = body


def pkce_pair() -> tuple[str, str]:
    """A PKCE code_verifier and its S256 code_challenge."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")
    return verifier, challenge


def basic_auth_header(client_id: str, client_secret: str) -> str:
    """client_secret_basic: both parts form-urlencoded first (RFC 6749 2.3.1)."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def _client_auth(client_id: str, client_secret: str, auth_method: str, data: dict, headers: dict) -> None:
    if auth_method == "client_secret_basic":
        headers["Authorization"] = basic_auth_header(client_id, client_secret)
    elif auth_method == "client_secret_post":
        data["client_id"] = client_id
        data["client_secret"] = client_secret
    else:
        raise ValueError(f"auth_method must be client_secret_post or client_secret_basic, not {auth_method!r}")


class _FormParser(HTMLParser):
    """The first form of a page: its action, method and input names/values."""

    def __init__(self):
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.inputs: dict[str, str] = {}
        self.has_form = False
        self._in_form = False
        self._done = False
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "title":
            self._in_title = True
        if self._done:
            return
        if tag == "form" and not self.has_form:
            self.has_form = True
            self._in_form = True
            self.action = attributes.get("action")
            self.method = (attributes.get("method") or "get").lower()
        elif tag == "input" and self._in_form and attributes.get("name"):
            self.inputs[attributes["name"]] = attributes.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form" and self._in_form:
            self._in_form = False
            self._done = True
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _is_redirect_target(location: str, redirect_uri: str) -> bool:
    got, want = urlsplit(location), urlsplit(redirect_uri)
    return (got.scheme, got.netloc, got.path) == (want.scheme, want.netloc, want.path)


def get_authorization_code(
    base_url: str,
    client_id: str,
    redirect_uri: str,
    username: str,
    password: str,
    scope: str = DEFAULT_SCOPE,
    verify: bool | str = True,
    *,
    session: requests.Session | None = None,
    pkce: str | None = "S256",
    state: str | None = None,
    nonce: str | None = None,
    extra_params: dict[str, str] | None = None,
    timeout: float = 10,
) -> dict[str, Any]:
    """Drive authorize -> login form -> authorize -> redirect to ``redirect_uri``.

    Returns ``{"code", "state", "nonce", "code_verifier", "location", "session"}``
    (``code_verifier`` is None when ``pkce`` is None; ``pkce`` may be "S256" or
    "plain"). Raises FlowError when the login is refused, access is denied, the
    server shows an error page, or the state comes back wrong.
    """
    session = session or requests.Session()
    state = state or secrets.token_urlsafe(16)
    nonce = nonce or secrets.token_urlsafe(16)
    params = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "nonce": nonce,
    }
    code_verifier = None
    if pkce == "S256":
        code_verifier, challenge = pkce_pair()
        params.update(code_challenge=challenge, code_challenge_method="S256")
    elif pkce == "plain":
        code_verifier = secrets.token_urlsafe(48)
        params.update(code_challenge=code_verifier, code_challenge_method="plain")
    elif pkce is not None:
        raise ValueError("pkce must be 'S256', 'plain' or None")
    params.update(extra_params or {})

    response = session.get(_url(base_url, AUTHORIZE_PATH), params=params, verify=verify,
                           allow_redirects=False, timeout=timeout)
    logged_in = False
    for _ in range(10):
        if response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if _is_redirect_target(location, redirect_uri):
                query = parse_qs(urlsplit(location).query)
                if "error" in query:
                    raise FlowError(
                        f"authorization failed: {query['error'][0]}: "
                        f"{query.get('error_description', [''])[0]}", response)
                if query.get("state", [None])[0] != state:
                    raise FlowError(f"state mismatch in redirect {location}", response)
                if "code" not in query:
                    raise FlowError(f"no code in redirect {location}", response)
                return {
                    "code": query["code"][0],
                    "state": state,
                    "nonce": nonce,
                    "code_verifier": code_verifier,
                    "location": location,
                    "session": session,
                }
            response = session.get(location, verify=verify, allow_redirects=False, timeout=timeout)
            continue
        page = _FormParser()
        page.feed(response.text)
        if response.status_code != 200:
            raise FlowError(f"HTTP {response.status_code} at {response.url}: {page.title.strip() or response.text[:200]}",
                            response)
        if "Permission denied" in response.text:
            raise FlowError(f"access denied for {username} at {response.url}", response)
        if page.has_form and "uid_field" in page.inputs:
            for message in ("Invalid password", "Failed to authenticate."):
                if logged_in and message in response.text:
                    raise FlowError(f"login refused for {username}: {message}", response)
            if logged_in:
                raise FlowError(f"login form shown again for {username}", response)
            data = dict(page.inputs)
            data["uid_field"] = username
            data["password"] = password
            action = urljoin(response.url, page.action or response.url)
            response = session.post(action, data=data, verify=verify, allow_redirects=False, timeout=timeout)
            logged_in = True
            continue
        raise FlowError(f"unexpected page at {response.url}: {page.title.strip() or response.text[:200]}", response)
    raise FlowError("too many redirects in the authorization flow", response)


def _token_request(
    base_url: str, client_id: str, client_secret: str, data: dict, verify: bool | str, auth_method: str, timeout: float,
    host: str | None = None,
) -> dict[str, Any]:
    """POST to the token endpoint as a confidential client; raises TokenEndpointError on an error answer.

    `host`: the Host header, as a client that reached authentik under another
    name would send it (authentik writes it into the tokens' `iss`)."""
    headers: dict[str, str] = {"Host": host} if host else {}
    _client_auth(client_id, client_secret, auth_method, data, headers)
    response = requests.post(_url(base_url, TOKEN_PATH), data=data, headers=headers, verify=verify, timeout=timeout)
    if response.status_code != 200:
        raise TokenEndpointError(response)
    return response.json()


def exchange_code(
    base_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    code_verifier: str | None = None,
    verify: bool | str = True,
    *,
    auth_method: str = "client_secret_post",
    timeout: float = 10,
    host: str | None = None,
) -> dict[str, Any]:
    """The RP's token request for a code; raises TokenEndpointError on an error answer."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if code_verifier:
        data["code_verifier"] = code_verifier
    return _token_request(base_url, client_id, client_secret, data, verify, auth_method, timeout, host)


def login_and_get_tokens(
    base_url: str,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    username: str,
    password: str,
    scope: str = DEFAULT_SCOPE,
    verify: bool | str = True,
    *,
    auth_method: str = "client_secret_post",
    session: requests.Session | None = None,
    timeout: float = 10,
    host: str | None = None,
) -> dict[str, Any]:
    """Log ``username`` in through the authorization code flow with PKCE S256 and
    return the token endpoint's JSON answer (access_token, token_type, scope,
    expires_in, id_token, and refresh_token when offline_access was granted).
    Use get_authorization_code + exchange_code to see the code, state or nonce."""
    grant = get_authorization_code(
        base_url, client_id, redirect_uri, username, password, scope, verify,
        session=session, pkce="S256", timeout=timeout,
    )
    return exchange_code(
        base_url, client_id, client_secret, grant["code"], redirect_uri, grant["code_verifier"], verify,
        auth_method=auth_method, timeout=timeout, host=host,
    )


def refresh(
    base_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    verify: bool | str = True,
    *,
    scope: str | None = None,
    auth_method: str = "client_secret_post",
    timeout: float = 10,
) -> dict[str, Any]:
    """refresh_token grant; raises TokenEndpointError on an error answer."""
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope is not None:
        data["scope"] = scope
    return _token_request(base_url, client_id, client_secret, data, verify, auth_method, timeout)


def introspect(
    base_url: str,
    token: str,
    client_id: str,
    client_secret: str,
    verify: bool | str = True,
    *,
    auth_method: str = "client_secret_basic",
    timeout: float = 10,
) -> dict[str, Any]:
    """RFC 7662 introspection as Dovecot does it (HTTP Basic by default). Returns
    the JSON answer; ``{"active": False}`` for a refused token."""
    data = {"token": token}
    headers: dict[str, str] = {}
    _client_auth(client_id, client_secret, auth_method, data, headers)
    response = requests.post(_url(base_url, INTROSPECT_PATH), data=data, headers=headers, verify=verify,
                             timeout=timeout)
    if response.status_code != 200:
        raise FlowError(f"introspection answered HTTP {response.status_code}: {response.text[:200]}", response)
    return response.json()


def userinfo(base_url: str, access_token: str, verify: bool | str = True, *, timeout: float = 10) -> dict[str, Any]:
    """GET userinfo with ``Authorization: Bearer``; raises FlowError unless HTTP 200."""
    response = requests.get(_url(base_url, USERINFO_PATH), headers={"Authorization": f"Bearer {access_token}"},
                            verify=verify, timeout=timeout)
    if response.status_code != 200:
        raise FlowError(f"userinfo answered HTTP {response.status_code} "
                        f"({response.headers.get('WWW-Authenticate', '')})", response)
    return response.json()


def revoke(
    base_url: str,
    token: str,
    client_id: str,
    client_secret: str,
    verify: bool | str = True,
    *,
    auth_method: str = "client_secret_basic",
    timeout: float = 10,
) -> None:
    """RFC 7009 revocation; raises FlowError unless HTTP 200."""
    data = {"token": token}
    headers: dict[str, str] = {}
    _client_auth(client_id, client_secret, auth_method, data, headers)
    response = requests.post(_url(base_url, REVOKE_PATH), data=data, headers=headers, verify=verify, timeout=timeout)
    if response.status_code != 200:
        raise FlowError(f"revocation answered HTTP {response.status_code}: {response.text[:200]}", response)


def jwks(base_url: str, slug: str, verify: bool | str = True, *, timeout: float = 10) -> dict[str, Any]:
    response = requests.get(_url(base_url, f"/application/o/{slug}/jwks/"), verify=verify, timeout=timeout)
    response.raise_for_status()
    return response.json()


def discovery(base_url: str, slug: str, verify: bool | str = True, *, timeout: float = 10) -> dict[str, Any]:
    response = requests.get(_url(base_url, f"/application/o/{slug}/.well-known/openid-configuration"),
                            verify=verify, timeout=timeout)
    response.raise_for_status()
    return response.json()


def rotate_signing_key(base_url: str, slug: str, verify: bool | str = True, *, timeout: float = 10) -> str:
    """The stand-in's test hook: the application's provider gets a new key pair
    (as when an authentik admin assigns another certificate); returns the new kid."""
    response = requests.post(_url(base_url, f"/-/standin/applications/{slug}/rotate-signing-key/"),
                             verify=verify, timeout=timeout)
    response.raise_for_status()
    return response.json()["kid"]


# --- app passwords (authentik's password / client_credentials grants) -----------------------------


def app_password_token(
    base_url: str,
    client_id: str,
    client_secret: str,
    username: str,
    app_password: str,
    verify: bool | str = True,
    *,
    scope: str | None = "openid email",
    grant_type: str = "password",
    auth_method: str = "client_secret_post",
    timeout: float = 10,
) -> dict[str, Any]:
    """What a mail server does with a user's app password: the token endpoint with
    ``grant_type=password`` (or ``client_credentials``), ``username`` (the authentik
    username) and ``password`` (the app password). Without ``scope`` the token
    carries no email. Raises TokenEndpointError on an error answer (400 invalid_grant)."""
    data = {"grant_type": grant_type, "username": username, "password": app_password}
    if scope is not None:
        data["scope"] = scope
    return _token_request(base_url, client_id, client_secret, data, verify, auth_method, timeout)


# --- the directory API and the stand-in's hooks for it ---------------------------------------


def api_get(base_url: str, path: str, api_token: str | None, verify: bool | str = True, *,
            params: dict[str, Any] | None = None, timeout: float = 10) -> requests.Response:
    """GET an authentik API path (e.g. /api/v3/core/users/) with a Bearer API token."""
    headers = {"Authorization": f"Bearer {api_token}"} if api_token is not None else {}
    return requests.get(_url(base_url, path), params=params, headers=headers, verify=verify, timeout=timeout)


def _hook(method: str, base_url: str, path: str, verify: bool | str, body: Any = None,
          timeout: float = 10) -> requests.Response:
    response = requests.request(method, _url(base_url, path), json=body, verify=verify, timeout=timeout)
    if response.status_code >= 400:
        raise FlowError(f"stand-in hook {method} {path} answered HTTP {response.status_code}: {response.text[:300]}",
                        response)
    return response


def add_user(base_url: str, user: dict[str, Any], verify: bool | str = True) -> dict[str, Any]:
    """The stand-in's hook: a new user (username, password, and optionally pk, name,
    email, groups, attributes, is_active, type, path). Returns it as the API shows it."""
    return _hook("POST", base_url, "/-/standin/users/", verify, user).json()


def update_user(base_url: str, username: str, verify: bool | str = True, **changes: Any) -> dict[str, Any]:
    """The stand-in's hook: change a user's is_active, email, attributes, groups or name
    (as an admin does in authentik). Deactivating deletes the user's OAuth tokens, as
    authentik does. Returns the user as the API shows it."""
    return _hook("POST", base_url, f"/-/standin/users/{quote(username, safe='')}/", verify, changes).json()


def put_group(base_url: str, name: str, verify: bool | str = True, **fields: Any) -> dict[str, Any]:
    """The stand-in's hook: add a group or update it (attributes, is_superuser, roles, pk)."""
    return _hook("POST", base_url, f"/-/standin/groups/{quote(name, safe='')}/", verify, fields).json()


def add_token(base_url: str, identifier: str, key: str, user: str, verify: bool | str = True, *,
              intent: str = "app_password", expires: str | None = None, expiring: bool = True) -> None:
    """The stand-in's hook: a token (an app password by default; intent "api" for the API)."""
    _hook("POST", base_url, "/-/standin/tokens/", verify, {
        "identifier": identifier, "key": key, "user": user, "intent": intent, "expires": expires,
        "expiring": expiring})


def delete_token(base_url: str, identifier: str, verify: bool | str = True) -> None:
    """The stand-in's hook: delete a token, as a user deleting an app password."""
    _hook("DELETE", base_url, f"/-/standin/tokens/{quote(identifier, safe='')}/", verify)


def set_directory_fault(base_url: str, fault: str, verify: bool | str = True) -> str:
    """The stand-in's hook: make /api/v3/core/users/ and /groups/ fail: "down" (the
    connection is reset), "error" (HTTP 500), "cut-paging" (pagination claims more than
    it returns) or "none". Returns the previous fault."""
    return _hook("POST", base_url, "/-/standin/directory-fault/", verify, {"fault": fault}).json()["previous"]

"""Tests of the authentik stand-in (tests/e2e/standin) over real HTTPS on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import ssl
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests

from standin import ConfigError, make_server, parse_config, timedelta_from_string
from standin.client import (
    FlowError,
    TokenEndpointError,
    add_token,
    add_user,
    api_get,
    app_password_token,
    basic_auth_header,
    delete_token,
    put_group,
    set_directory_fault,
    update_user,
    exchange_code,
    get_authorization_code,
    introspect,
    jwks,
    login_and_get_tokens,
    pkce_pair,
    refresh,
    revoke,
    rotate_signing_key,
    userinfo,
)
from standin.mappings import claims_for, deep_merge

E2E_DIR = Path(__file__).resolve().parents[1] / "e2e"
WEBMAIL_REDIRECT = "https://mail.example.test/index.php/login/oauth"
WEBMAIL_SECRET = "s3cr3t:with%41special/+chars and spaces"
OTHER_SECRET = "other-secret-0123456789-0123456789-0123456789"
SHORT_SECRET = "short-secret-0123456789-0123456789-0123456789"
BROKEN_SECRET = "broken-secret-0123456789-0123456789-0123456789"
HS_SECRET = "hs-secret-0123456789-0123456789-0123456789-xyz"
ALICE_APP_PASSWORD = "alice-app-password-0123456789-0123456789-0123456789-abcdefgh"
ALICE_EXPIRED_APP_PASSWORD = "alice-expired-app-password-0123456789-0123456789-0123456789"
ALICE_API_KEY = "alice-api-key-0123456789-0123456789-0123456789-0123456789-ab"
BOB_APP_PASSWORD = "bob-app-password-0123456789-0123456789-0123456789-abcdefghij"
DIRECTORY_API_KEY = "directory-api-key-0123456789-0123456789-0123456789-012345"

DOVECOT_EXPRESSION = """\
groups = [group.name for group in request.user.ak_groups.all()]
return {
    "name": request.user.name,
    "dovecot_user": request.user.email,
    "dovecot_groups": groups,
    "login_upper": request.user.username.upper(),
}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def standin_config(base_url: str, port: int, tls: dict[str, str]) -> dict:
    """The config the tests run against: several applications exercising the options."""

    def provider(client_id: str, secret: str, scopes: list[str], redirect: list[dict], **extra) -> dict:
        settings = {
            "name": client_id,
            "client_id": client_id,
            "client_secret": secret,
            "client_type": "confidential",
            "allowed_redirect_uris": redirect,
            "scopes": scopes,
            "access_code_validity": "minutes=1",
            "access_token_validity": "minutes=10",
            "refresh_token_validity": "days=30",
            "include_claims_in_id_token": True,
            "sub_mode": "hashed_user_id",
            "issuer_mode": "per_provider",
            "signing_key": True,
            "allowed_group": None,
        }
        settings.update(extra)
        return settings

    strict = [{"matching_mode": "strict", "url": WEBMAIL_REDIRECT}]
    return {
        "base_url": base_url,
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {"cert_file": tls["cert"], "key_file": tls["key"]},
        "users": [
            {"username": "alice", "name": "Alice Liddell", "email": "alice@example.test", "password": "alice-pw",
             "groups": ["webmail-users", "staff"]},
            {"username": "bob", "name": "Bob Builder", "email": "bob@example.test", "password": "bob-pw",
             "groups": ["staff"]},
            {"username": "carol", "name": "Carol Danvers", "email": "Carol@Example.test", "password": "carol-pw",
             "groups": ["webmail-users"]},
            {"username": "svc-directory", "password": "unused-service-pw", "type": "service_account",
             "path": "goauthentik.io/service-accounts", "groups": ["directory-readers"]},
        ],
        "roles": [{"name": "directory-reader",
                   "permissions": ["authentik_core.view_user", "authentik_core.view_group"]},
                  {"name": "user-viewer", "permissions": ["authentik_core.view_user"]}],
        "groups": [
            {"name": "directory-readers", "roles": ["directory-reader"]},
            {"name": "staff", "attributes": {"mail_address": "staff@example.test"}},
        ],
        "tokens": [
            {"identifier": "alice-phone", "key": ALICE_APP_PASSWORD, "user": "alice", "intent": "app_password",
             "expiring": False},
            {"identifier": "alice-old-phone", "key": ALICE_EXPIRED_APP_PASSWORD, "user": "alice",
             "intent": "app_password", "expires": "2020-01-01T00:00:00Z", "expiring": True},
            {"identifier": "alice-api", "key": ALICE_API_KEY, "user": "alice", "intent": "api", "expiring": False},
            {"identifier": "bob-phone", "key": BOB_APP_PASSWORD, "user": "bob", "intent": "app_password",
             "expiring": False},
            {"identifier": "svc-directory-api", "key": DIRECTORY_API_KEY, "user": "svc-directory", "intent": "api",
             "expiring": False},
        ],
        "scope_mappings": [
            {"name": "dovecotprofile", "scope_name": "dovecotprofile", "expression": DOVECOT_EXPRESSION},
            {"name": "broken", "scope_name": "broken",
             "expression": 'raise ValueError("mapping exploded for " + request.user.username)'},
            {"name": "notadict", "scope_name": "notadict", "expression": 'return "just a string"'},
        ],
        "applications": [
            {
                "name": "Webmail", "slug": "webmail", "launch_url": "https://mail.example.test", "group": None,
                "provider": provider(
                    "webmail-client", WEBMAIL_SECRET,
                    ["openid", "email", "profile", "offline_access", "dovecotprofile"], strict,
                    allowed_group="webmail-users",
                ),
            },
            {
                "name": "Other", "slug": "other", "launch_url": None, "group": None,
                "provider": provider(
                    "other-client", OTHER_SECRET, ["openid", "email", "offline_access"],
                    [{"matching_mode": "regex", "url": r"https://other\.example\.test/cb/[a-z]+"}],
                ),
            },
            {
                "name": "Short", "slug": "short", "launch_url": None, "group": None,
                "provider": provider(
                    "short-client", SHORT_SECRET, ["openid", "email", "offline_access"], strict,
                    access_code_validity="seconds=1", access_token_validity="seconds=1",
                    refresh_token_validity="seconds=1",
                ),
            },
            {
                "name": "Broken", "slug": "broken", "launch_url": None, "group": None,
                "provider": provider(
                    "broken-client", BROKEN_SECRET, ["openid", "email", "broken", "notadict"], strict,
                    sub_mode="user_username",
                ),
            },
            {
                "name": "HS", "slug": "hs", "launch_url": None, "group": None,
                "provider": provider(
                    "hs-client", HS_SECRET, ["openid", "email"], strict,
                    signing_key=False, sub_mode="user_email", issuer_mode="global",
                    include_claims_in_id_token=False,
                ),
            },
        ],
    }


class RunningStandin:
    def __init__(self, base_url: str, ca: str, config: dict):
        self.base_url = base_url
        self.ca = ca
        self.config = config
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def log(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
        print(f"standin: {line}", file=sys.stderr, flush=True)

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def logs_since(self, mark: int) -> str:
        with self._lock:
            return "\n".join(self.lines[mark:])

    def issuer(self, slug: str) -> str:
        return f"{self.base_url}/application/o/{slug}/"


@contextlib.contextmanager
def serving(tls_files):
    port = free_port()
    base_url = f"https://127.0.0.1:{port}"
    config = standin_config(base_url, port, tls_files)
    running = RunningStandin(base_url, tls_files["ca"], config)
    server = make_server(config, log=running.log)
    thread = threading.Thread(target=server.serve_forever, name="standin", daemon=True)
    thread.start()
    try:
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def standin(tls_files):
    with serving(tls_files) as running:
        yield running


@pytest.fixture
def fresh_standin(tls_files):
    """A stand-in of its own, for tests that change users, groups, tokens or faults."""
    with serving(tls_files) as running:
        yield running


WEBMAIL = ("webmail-client", WEBMAIL_SECRET)
OTHER = ("other-client", OTHER_SECRET)
OTHER_REDIRECT = "https://other.example.test/cb/done"
FULL_SCOPE = "openid email offline_access dovecotprofile"


def webmail_tokens(standin, username="alice", password="alice-pw", scope=FULL_SCOPE, **kwargs) -> dict:
    return login_and_get_tokens(standin.base_url, *WEBMAIL, WEBMAIL_REDIRECT, username, password, scope,
                                verify=standin.ca, **kwargs)


def verify_rs256(standin, token: str, slug: str, audience: str) -> dict:
    keys = requests.get(f"{standin.base_url}/application/o/{slug}/jwks/", verify=standin.ca, timeout=10).json()
    header = jwt.get_unverified_header(token)
    (jwk,) = [k for k in keys["keys"] if k["kid"] == header["kid"]]
    public_key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(jwk))
    return jwt.decode(token, public_key, algorithms=["RS256"], audience=audience, issuer=standin.issuer(slug))


def authorize_url(standin, **params) -> str:
    return f"{standin.base_url}/application/o/authorize/?{urlencode(params)}"


def post_token(standin, data: dict, auth: tuple[str, str] | None = None) -> requests.Response:
    headers = {"Authorization": basic_auth_header(*auth)} if auth else {}
    return requests.post(f"{standin.base_url}/application/o/token/", data=data, headers=headers,
                         verify=standin.ca, timeout=10)


# --- config parsing -------------------------------------------------------------------


def test_timedelta_from_string_follows_authentik():
    assert timedelta_from_string("minutes=1").total_seconds() == 60
    assert timedelta_from_string("hours=1;minutes=30;seconds=2").total_seconds() == 5402
    assert timedelta_from_string("days=30").days == 30
    assert timedelta_from_string("weeks=1;bogus=3").days == 7  # unknown keys are skipped
    assert timedelta_from_string("seconds=0.5").total_seconds() == 0.5
    with pytest.raises(ValueError):
        timedelta_from_string("bogus=1")
    with pytest.raises(ValueError):
        timedelta_from_string("minutes")


def test_config_errors_are_reported(tls_files):
    good = standin_config("https://auth.example.test:9443", 9443, tls_files)
    parse_config(good)
    bad_scope = json.loads(json.dumps(good))
    bad_scope["applications"][0]["provider"]["scopes"].append("nosuchscope")
    with pytest.raises(ConfigError, match="nosuchscope"):
        parse_config(bad_scope)
    bad_validity = json.loads(json.dumps(good))
    bad_validity["applications"][0]["provider"]["access_token_validity"] = "ten minutes"
    with pytest.raises(ConfigError, match="access_token_validity"):
        parse_config(bad_validity)
    bad_expression = json.loads(json.dumps(good))
    bad_expression["scope_mappings"][0]["expression"] = "return {"
    with pytest.raises(ConfigError, match="does not compile"):
        parse_config(bad_expression)
    extra = json.loads(json.dumps(good))
    extra["applications"][0]["provider"]["authorization_flow"] = "default-provider-authorization-implicit-consent"
    assert any("authorization_flow" in w for w in parse_config(extra).warnings)
    camel = json.loads(json.dumps(good))
    camel["applications"][0]["provider"]["allowed_redirect_uris"] = [{"matchingMode": "regex", "url": "https://x/.*"}]
    (uri,) = parse_config(camel).applications[0].provider.redirect_uris
    assert uri.matching_mode == "regex" and uri.matches("https://x/cb") and not uri.matches("https://y/cb")


def test_claims_deep_merge_in_scope_name_order(tls_files):
    config = standin_config("https://auth.example.test", 1, tls_files)
    config["scope_mappings"] += [
        {"name": "b", "scope_name": "b", "expression": 'return {"n": {"b": 2}, "l": [2], "x": "from b"}'},
        {"name": "a", "scope_name": "a", "expression": 'return {"n": {"a": 1}, "l": [1], "x": "from a"}'},
    ]
    config["applications"][1]["provider"]["scopes"] += ["b", "a"]
    parsed = parse_config(config)
    provider = parsed.provider_by_client_id("other-client")
    alice = parsed.user_by_username("alice")
    claims = claims_for(provider, alice, ["a", "b", "email"], log=lambda line: None)
    assert claims == {"n": {"a": 1, "b": 2}, "l": [1, 2], "x": "from b",
                      "email": "alice@example.test", "email_verified": False}
    assert deep_merge({"k": [1], "d": {"x": 1}}, {"k": [2], "d": {"y": 2}}) == {"k": [1, 2], "d": {"x": 1, "y": 2}}


# --- discovery and keys -----------------------------------------------------------------


def test_discovery_document(standin):
    doc = requests.get(f"{standin.base_url}/application/o/webmail/.well-known/openid-configuration",
                       verify=standin.ca, timeout=10).json()
    base = standin.base_url
    assert doc["issuer"] == f"{base}/application/o/webmail/"
    assert doc["authorization_endpoint"] == f"{base}/application/o/authorize/"
    assert doc["token_endpoint"] == f"{base}/application/o/token/"
    assert doc["userinfo_endpoint"] == f"{base}/application/o/userinfo/"
    assert doc["introspection_endpoint"] == f"{base}/application/o/introspect/"
    assert doc["revocation_endpoint"] == f"{base}/application/o/revoke/"
    assert doc["jwks_uri"] == f"{base}/application/o/webmail/jwks/"
    assert doc["end_session_endpoint"] == f"{base}/application/o/webmail/end-session/"
    assert doc["token_endpoint_auth_methods_supported"] == ["client_secret_post", "client_secret_basic"]
    assert doc["code_challenge_methods_supported"] == ["plain", "S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(doc["scopes_supported"]) == {"openid", "email", "profile", "offline_access", "dovecotprofile"}
    assert "code" in doc["response_types_supported"]
    assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])
    missing = requests.get(f"{base}/application/o/nosuchapp/.well-known/openid-configuration",
                           verify=standin.ca, timeout=10)
    assert missing.status_code == 404


def test_jwks_serves_the_signing_key(standin):
    response = requests.get(f"{standin.base_url}/application/o/webmail/jwks/", verify=standin.ca, timeout=10)
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    (key,) = response.json()["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig" and key["kid"]
    assert jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(key)).key_size == 2048
    # A provider without a signing key signs with HS256 and publishes no key.
    assert requests.get(f"{standin.base_url}/application/o/hs/jwks/", verify=standin.ca, timeout=10).json() == {}
    assert requests.get(f"{standin.base_url}/application/o/nope/jwks/", verify=standin.ca,
                        timeout=10).status_code == 404


# --- the authorization code flow -----------------------------------------------------------


def test_full_code_flow_returns_verifiable_tokens(standin):
    grant = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                   FULL_SCOPE, verify=standin.ca)
    tokens = exchange_code(standin.base_url, *WEBMAIL, grant["code"], WEBMAIL_REDIRECT, grant["code_verifier"],
                           verify=standin.ca)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 600
    assert tokens["scope"].split() == ["openid", "email", "offline_access", "dovecotprofile"]
    assert tokens["refresh_token"]

    # A standard client fetching the JWKS over HTTPS verifies both tokens.
    jwks_client = jwt.PyJWKClient(f"{standin.base_url}/application/o/webmail/jwks/",
                                  ssl_context=ssl.create_default_context(cafile=standin.ca))
    signing_key = jwks_client.get_signing_key_from_jwt(tokens["access_token"])
    access = jwt.decode(tokens["access_token"], signing_key.key, algorithms=["RS256"],
                        audience="webmail-client", issuer=standin.issuer("webmail"))
    id_token = verify_rs256(standin, tokens["id_token"], "webmail", "webmail-client")

    for claims in (access, id_token):
        assert claims["iss"] == f"{standin.base_url}/application/o/webmail/"
        assert claims["aud"] == "webmail-client"
        assert claims["sub"] == hashlib.sha256(b"standin-alice").hexdigest()
        assert claims["acr"] == "goauthentik.io/providers/oauth2/default"
        assert claims["email"] == "alice@example.test"
        assert claims["email_verified"] is False
        assert claims["dovecot_user"] == "alice@example.test"
        assert claims["nonce"] == grant["nonce"]
        assert claims["exp"] - claims["iat"] in (599, 600)
        assert abs(claims["auth_time"] - time.time()) < 60
    assert access["azp"] == "webmail-client" and access["uid"]
    assert "profile" not in tokens["scope"].split() and "preferred_username" not in access
    # at_hash: left half of SHA-256 of the access token, base64url.
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    assert id_token["at_hash"] == base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def test_login_page_form_and_wrong_password(standin):
    session = requests.Session()
    first = session.get(authorize_url(standin, client_id="webmail-client", response_type="code",
                                      redirect_uri=WEBMAIL_REDIRECT, scope="openid", state="s1"),
                        verify=standin.ca, allow_redirects=False, timeout=10)
    assert first.status_code == 302
    location = first.headers["Location"]
    assert location.startswith("/if/flow/default-authentication-flow/?next=%2Fapplication%2Fo%2Fauthorize%2F")
    page = session.get(standin.base_url + location, verify=standin.ca, timeout=10)
    for needle in ('name="uid_field"', 'id="uid_field"', 'name="password"', 'id="password"', ">Log in</button>"):
        assert needle in page.text
    wrong = session.post(standin.base_url + location, data={"uid_field": "alice", "password": "nope"},
                         verify=standin.ca, allow_redirects=False, timeout=10)
    assert wrong.status_code == 200 and "Invalid password" in wrong.text
    with pytest.raises(FlowError, match="Invalid password"):
        webmail_tokens(standin, password="wrong")
    # E-mail address (any case) works as the login name too.
    tokens = webmail_tokens(standin, username="carol@example.test", password="carol-pw", scope="openid email")
    assert jwt.decode(tokens["id_token"], options={"verify_signature": False})["email"] == "Carol@Example.test"


def test_login_next_is_never_an_open_redirect(standin):
    response = requests.post(
        f"{standin.base_url}/if/flow/default-authentication-flow/?next=https%3A%2F%2Fevil.example%2F",
        data={"uid_field": "alice", "password": "alice-pw"}, verify=standin.ca, allow_redirects=False, timeout=10)
    assert response.status_code == 302 and response.headers["Location"] == "/if/user/"


def test_wrong_redirect_uri_is_a_redirect_uri_error(standin):
    for bad in (WEBMAIL_REDIRECT + "?x=1", WEBMAIL_REDIRECT + "/", "https://evil.example/index.php/login/oauth",
                "https://mail.example.test/?_task=settings&_action=plugin.oauth_redirect"):
        response = requests.get(authorize_url(standin, client_id="webmail-client", response_type="code",
                                              redirect_uri=bad, scope="openid"),
                                verify=standin.ca, allow_redirects=False, timeout=10)
        assert response.status_code == 400, bad
        assert "Redirect URI Error" in response.text
    unknown = requests.get(authorize_url(standin, client_id="nobody", response_type="code",
                                         redirect_uri=WEBMAIL_REDIRECT), verify=standin.ca, timeout=10)
    assert unknown.status_code == 400 and "Client ID Error" in unknown.text


def test_regex_redirect_uri_must_match_fully(standin):
    grant = get_authorization_code(standin.base_url, "other-client", OTHER_REDIRECT, "bob", "bob-pw",
                                   "openid email", verify=standin.ca)
    assert grant["location"].startswith(OTHER_REDIRECT + "?code=")
    response = requests.get(authorize_url(standin, client_id="other-client", response_type="code",
                                          redirect_uri=OTHER_REDIRECT + "/more", scope="openid"),
                            verify=standin.ca, allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "Redirect URI Error" in response.text


def test_group_restriction_denies_users_outside_the_group(standin):
    with pytest.raises(FlowError, match="access denied") as excinfo:
        webmail_tokens(standin, username="bob", password="bob-pw")
    page = excinfo.value.response
    assert "Permission denied" in page.text and "Request has been denied." in page.text
    assert "code=" not in page.headers.get("Location", "")
    # The other application has no group restriction.
    assert login_and_get_tokens(standin.base_url, *OTHER, OTHER_REDIRECT, "bob", "bob-pw", "openid",
                                verify=standin.ca)["access_token"]


def test_client_secret_basic_and_post_both_work_and_wrong_secret_is_refused(standin):
    for method in ("client_secret_post", "client_secret_basic"):
        tokens = webmail_tokens(standin, auth_method=method)
        assert tokens["access_token"]
    grant = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                   FULL_SCOPE, verify=standin.ca)
    for auth, extra in ((("webmail-client", "wrong"), {}),
                        (None, {"client_id": "webmail-client", "client_secret": "wrong"}),
                        (None, {"client_id": "nobody", "client_secret": "x"})):
        response = post_token(standin, {"grant_type": "authorization_code", "code": grant["code"],
                                        "redirect_uri": WEBMAIL_REDIRECT,
                                        "code_verifier": grant["code_verifier"], **extra}, auth=auth)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_client"
        assert response.headers["Cache-Control"] == "no-store"
    # The code survived the refused attempts and still works once.
    assert exchange_code(standin.base_url, *WEBMAIL, grant["code"], WEBMAIL_REDIRECT, grant["code_verifier"],
                         verify=standin.ca, auth_method="client_secret_basic")["access_token"]


def test_pkce_and_code_rules(standin):
    grant = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                   FULL_SCOPE, verify=standin.ca)
    wrong_verifier, _ = pkce_pair()
    for verifier in (wrong_verifier, None):
        with pytest.raises(TokenEndpointError) as excinfo:
            exchange_code(standin.base_url, *WEBMAIL, grant["code"], WEBMAIL_REDIRECT, verifier, verify=standin.ca)
        assert excinfo.value.status == 400 and excinfo.value.body["error"] == "invalid_grant"
    # redirect_uri must be allowed (authentik: invalid_client) ...
    with pytest.raises(TokenEndpointError) as excinfo:
        exchange_code(standin.base_url, *WEBMAIL, grant["code"], "https://evil.example/cb", grant["code_verifier"],
                      verify=standin.ca)
    assert excinfo.value.body["error"] == "invalid_client"
    # ... the right verifier works, once.
    assert exchange_code(standin.base_url, *WEBMAIL, grant["code"], WEBMAIL_REDIRECT, grant["code_verifier"],
                         verify=standin.ca)["access_token"]
    with pytest.raises(TokenEndpointError, match="invalid_grant"):
        exchange_code(standin.base_url, *WEBMAIL, grant["code"], WEBMAIL_REDIRECT, grant["code_verifier"],
                      verify=standin.ca)
    # plain PKCE, and a verifier sent for a code without a challenge (downgrade) is refused.
    plain = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                   "openid", verify=standin.ca, pkce="plain")
    assert exchange_code(standin.base_url, *WEBMAIL, plain["code"], WEBMAIL_REDIRECT, plain["code_verifier"],
                         verify=standin.ca)["access_token"]
    bare = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                  "openid", verify=standin.ca, pkce=None)
    with pytest.raises(TokenEndpointError, match="invalid_grant"):
        exchange_code(standin.base_url, *WEBMAIL, bare["code"], WEBMAIL_REDIRECT, "unexpected", verify=standin.ca)
    # A code cannot be redeemed by another client.
    other = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                   "openid", verify=standin.ca, pkce=None)
    with pytest.raises(TokenEndpointError, match="invalid_"):
        exchange_code(standin.base_url, *OTHER, other["code"], OTHER_REDIRECT, verify=standin.ca)
    assert post_token(standin, {"grant_type": "bogus", "client_id": "webmail-client",
                                "client_secret": WEBMAIL_SECRET}).json()["error"] == "unsupported_grant_type"


def test_unknown_scopes_are_dropped_and_state_is_returned(standin):
    grant = get_authorization_code(standin.base_url, "other-client", OTHER_REDIRECT, "alice", "alice-pw",
                                   "openid bogus email profile dovecotprofile", verify=standin.ca,
                                   state="my-state")
    query = parse_qs(urlsplit(grant["location"]).query)
    assert query["state"] == ["my-state"]
    tokens = exchange_code(standin.base_url, *OTHER, grant["code"], OTHER_REDIRECT, grant["code_verifier"],
                           verify=standin.ca)
    assert tokens["scope"] == "openid email"
    assert "refresh_token" not in tokens


def test_refresh_tokens_only_with_offline_access_and_rotate(standin):
    without = webmail_tokens(standin, scope="openid email dovecotprofile")
    assert "refresh_token" not in without
    tokens = webmail_tokens(standin)
    first_refresh = tokens["refresh_token"]
    renewed = refresh(standin.base_url, *WEBMAIL, first_refresh, verify=standin.ca)
    assert renewed["refresh_token"] != first_refresh
    assert renewed["access_token"] != tokens["access_token"]
    assert renewed["scope"].split() == tokens["scope"].split()
    assert verify_rs256(standin, renewed["id_token"], "webmail", "webmail-client")["email"] == "alice@example.test"
    assert introspect(standin.base_url, renewed["access_token"], *WEBMAIL, verify=standin.ca)["active"] is True
    # The old refresh token is revoked by the rotation (introspection still finds it, inactive).
    with pytest.raises(TokenEndpointError, match="invalid_grant"):
        refresh(standin.base_url, *WEBMAIL, first_refresh, verify=standin.ca)
    old = introspect(standin.base_url, first_refresh, *WEBMAIL, verify=standin.ca)
    assert old["active"] is False and old["email"] == "alice@example.test"
    # Asking for scopes without offline_access, or beyond the grant, is invalid_scope.
    with pytest.raises(TokenEndpointError, match="invalid_scope"):
        refresh(standin.base_url, *WEBMAIL, renewed["refresh_token"], verify=standin.ca, scope="openid email")
    with pytest.raises(TokenEndpointError, match="invalid_scope"):
        refresh(standin.base_url, *WEBMAIL, renewed["refresh_token"], verify=standin.ca,
                scope="openid offline_access profile")
    # Another provider cannot use it; basic auth works for refresh too.
    with pytest.raises(TokenEndpointError, match="invalid_grant"):
        refresh(standin.base_url, *OTHER, renewed["refresh_token"], verify=standin.ca)
    assert refresh(standin.base_url, *WEBMAIL, renewed["refresh_token"], verify=standin.ca,
                   auth_method="client_secret_basic")["access_token"]


# --- introspection ------------------------------------------------------------------------


def test_introspection_of_own_token(standin):
    tokens = webmail_tokens(standin)
    for method in ("client_secret_basic", "client_secret_post"):
        info = introspect(standin.base_url, tokens["access_token"], *WEBMAIL, verify=standin.ca, auth_method=method)
        assert info["active"] is True
        assert info["client_id"] == "webmail-client"
        assert info["scope"] == "openid email offline_access dovecotprofile"
        assert info["aud"] == "webmail-client"
        assert info["iss"] == standin.issuer("webmail")
        assert info["email"] == "alice@example.test"
        assert info["name"] == "Alice Liddell"
        assert info["dovecot_user"] == "alice@example.test"
        assert info["dovecot_groups"] == ["webmail-users", "staff"]
        assert info["login_upper"] == "ALICE"
        assert {"sub", "exp", "iat", "auth_time", "acr", "jti"} <= set(info)
    refreshed = introspect(standin.base_url, tokens["refresh_token"], *WEBMAIL, verify=standin.ca)
    assert refreshed["active"] is True and refreshed["email"] == "alice@example.test"


def test_introspection_refuses_what_it_must(standin):
    tokens = webmail_tokens(standin)
    other_tokens = login_and_get_tokens(standin.base_url, *OTHER, OTHER_REDIRECT, "alice", "alice-pw",
                                        "openid email", verify=standin.ca)
    mark = standin.mark()
    inactive = {"active": False}
    assert introspect(standin.base_url, "garbage", *WEBMAIL, verify=standin.ca) == inactive
    assert introspect(standin.base_url, other_tokens["access_token"], *WEBMAIL, verify=standin.ca) == inactive
    assert introspect(standin.base_url, tokens["access_token"], *OTHER, verify=standin.ca) == inactive
    assert introspect(standin.base_url, tokens["access_token"], "webmail-client", "wrong",
                      verify=standin.ca) == inactive
    assert introspect(standin.base_url, tokens["access_token"], "webmail-client", "wrong", verify=standin.ca,
                      auth_method="client_secret_post") == inactive
    no_auth = requests.post(f"{standin.base_url}/application/o/introspect/", data={"token": tokens["access_token"]},
                            verify=standin.ca, timeout=10)
    assert no_auth.status_code == 200 and no_auth.json() == inactive
    get = requests.get(f"{standin.base_url}/application/o/introspect/", verify=standin.ca, timeout=10)
    assert get.status_code == 405
    logs = standin.logs_since(mark)
    assert "introspect: unknown token" in logs
    assert "of another provider" in logs
    assert "wrong client secret for webmail-client" in logs
    assert "GET /application/o/introspect/ -> 405" in logs
    # Basic credentials are percent-decoded: a raw (unencoded) secret containing "%41" does not match.
    raw_basic = "Basic " + base64.b64encode(f"webmail-client:{WEBMAIL_SECRET}".encode()).decode()
    response = requests.post(f"{standin.base_url}/application/o/introspect/", data={"token": tokens["access_token"]},
                             headers={"Authorization": raw_basic}, verify=standin.ca, timeout=10)
    assert response.json() == inactive


def test_token_without_openid_is_inactive_and_forbidden_at_userinfo(standin):
    tokens = webmail_tokens(standin, scope="email dovecotprofile")
    assert tokens["scope"] == "email dovecotprofile"
    assert introspect(standin.base_url, tokens["access_token"], *WEBMAIL, verify=standin.ca) == {"active": False}
    response = requests.get(f"{standin.base_url}/application/o/userinfo/",
                            headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            verify=standin.ca, timeout=10)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_expiry_of_codes_and_tokens(standin):
    short = ("short-client", SHORT_SECRET)
    tokens = login_and_get_tokens(standin.base_url, *short, WEBMAIL_REDIRECT, "alice", "alice-pw",
                                  "openid email offline_access", verify=standin.ca)
    assert tokens["expires_in"] == 1
    code = get_authorization_code(standin.base_url, "short-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                  "openid", verify=standin.ca)
    assert introspect(standin.base_url, tokens["access_token"], *short, verify=standin.ca)["active"] is True
    time.sleep(1.3)
    assert introspect(standin.base_url, tokens["access_token"], *short, verify=standin.ca) == {"active": False}
    assert introspect(standin.base_url, tokens["refresh_token"], *short, verify=standin.ca) == {"active": False}
    response = requests.get(f"{standin.base_url}/application/o/userinfo/",
                            headers={"Authorization": f"Bearer {tokens['access_token']}"},
                            verify=standin.ca, timeout=10)
    assert response.status_code == 401
    with pytest.raises(TokenEndpointError, match="invalid_grant"):
        refresh(standin.base_url, *short, tokens["refresh_token"], verify=standin.ca)
    with pytest.raises(TokenEndpointError, match="invalid_grant"):
        exchange_code(standin.base_url, *short, code["code"], WEBMAIL_REDIRECT, code["code_verifier"],
                      verify=standin.ca)


def test_revoked_token_is_inactive(standin):
    tokens = webmail_tokens(standin)
    revoke(standin.base_url, tokens["access_token"], *WEBMAIL, verify=standin.ca)
    assert introspect(standin.base_url, tokens["access_token"], *WEBMAIL, verify=standin.ca) == {"active": False}
    with pytest.raises(FlowError, match="401"):
        userinfo(standin.base_url, tokens["access_token"], verify=standin.ca)
    # Unknown tokens are fine to revoke (RFC 7009); bad client credentials are not.
    revoke(standin.base_url, "nonsense", *WEBMAIL, verify=standin.ca)
    with pytest.raises(FlowError, match="401"):
        revoke(standin.base_url, tokens["refresh_token"], "webmail-client", "wrong", verify=standin.ca)


# --- userinfo ------------------------------------------------------------------------------


def test_userinfo(standin):
    url = f"{standin.base_url}/application/o/userinfo/"
    for headers in ({}, {"Authorization": "Bearer garbage"}):
        response = requests.get(url, headers=headers, verify=standin.ca, timeout=10)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('error="invalid_token", error_description="')
    tokens = webmail_tokens(standin, scope="openid email profile dovecotprofile")
    expected_sub = hashlib.sha256(b"standin-alice").hexdigest()
    answers = [
        requests.get(url, headers={"Authorization": f"Bearer {tokens['access_token']}"}, verify=standin.ca,
                     timeout=10),
        requests.post(url, data={"access_token": tokens["access_token"]}, verify=standin.ca, timeout=10),
        requests.get(url, params={"access_token": tokens["access_token"]}, verify=standin.ca, timeout=10),
    ]
    for response in answers:
        assert response.status_code == 200
        claims = response.json()
        assert claims["sub"] == expected_sub
        assert claims["email"] == "alice@example.test"
        assert claims["preferred_username"] == "alice"
        assert claims["nickname"] == "alice"
        assert claims["given_name"] == "Alice Liddell"
        assert claims["groups"] == ["webmail-users", "staff"]
        assert claims["dovecot_groups"] == ["webmail-users", "staff"]
        assert "nonce" in claims


def test_raising_expression_leaves_its_claims_out(standin):
    mark = standin.mark()
    tokens = login_and_get_tokens(standin.base_url, "broken-client", BROKEN_SECRET, WEBMAIL_REDIRECT, "alice",
                                  "alice-pw", "openid email broken notadict", verify=standin.ca)
    assert tokens["scope"] == "openid email broken notadict"
    info = introspect(standin.base_url, tokens["access_token"], "broken-client", BROKEN_SECRET, verify=standin.ca)
    assert info["active"] is True
    assert info["email"] == "alice@example.test"
    assert info["sub"] == "alice"  # sub_mode user_username
    assert set(info) >= {"iss", "sub", "aud", "exp", "iat", "auth_time", "acr", "jti", "email", "email_verified",
                         "active", "scope", "client_id"}
    assert userinfo(standin.base_url, tokens["access_token"], verify=standin.ca) == {
        "sub": "alice", "email": "alice@example.test", "email_verified": False, "nonce": info["nonce"]}
    logs = standin.logs_since(mark)
    assert "Failed to evaluate property-mapping: 'broken'" in logs
    assert "mapping exploded for alice" in logs
    assert "returned a non-dict value" in logs


def test_provider_without_signing_key_uses_hs256_with_the_client_secret(standin):
    tokens = login_and_get_tokens(standin.base_url, "hs-client", HS_SECRET, WEBMAIL_REDIRECT, "alice", "alice-pw",
                                  "openid email", verify=standin.ca)
    assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "HS256"
    claims = jwt.decode(tokens["id_token"], HS_SECRET, algorithms=["HS256"], audience="hs-client",
                        issuer=f"{standin.base_url}/")
    assert claims["sub"] == "alice@example.test"  # sub_mode user_email
    assert "email" not in claims  # include_claims_in_id_token false
    assert userinfo(standin.base_url, tokens["access_token"], verify=standin.ca)["email"] == "alice@example.test"


def test_logs_never_carry_secrets_or_tokens(standin):
    mark = standin.mark()
    grant = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                   FULL_SCOPE, verify=standin.ca)
    tokens = exchange_code(standin.base_url, *WEBMAIL, grant["code"], WEBMAIL_REDIRECT, grant["code_verifier"],
                           verify=standin.ca, auth_method="client_secret_basic")
    introspect(standin.base_url, tokens["access_token"], *WEBMAIL, verify=standin.ca)
    requests.get(f"{standin.base_url}/application/o/userinfo/", params={"access_token": tokens["access_token"]},
                 verify=standin.ca, timeout=10)
    refresh(standin.base_url, *WEBMAIL, tokens["refresh_token"], verify=standin.ca)
    logs = standin.logs_since(mark)
    assert "token: authorization_code for alice" in logs
    for secret in (WEBMAIL_SECRET, "alice-pw", grant["code"], grant["code_verifier"], tokens["access_token"],
                   tokens["access_token"][-40:], tokens["refresh_token"], tokens["id_token"][-40:]):
        assert secret not in logs


# --- the command line, as the container runs it ----------------------------------------------


def test_module_entry_point_serves_and_stops_on_sigterm(tls_files, tmp_path):
    port = free_port()
    base_url = f"https://localhost:{port}"
    config = standin_config(base_url, port, tls_files)
    config_file = tmp_path / "standin.json"
    config_file.write_text(json.dumps(config))
    env = dict(os.environ, PYTHONPATH=str(E2E_DIR))
    process = subprocess.Popen([sys.executable, "-m", "standin", str(config_file)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                live = requests.get(f"{base_url}/-/health/live/", verify=tls_files["ca"], timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"stand-in did not start: {process.communicate(timeout=5)}") from None
                time.sleep(0.1)
        assert live.status_code == 200
        doc = requests.get(f"{base_url}/application/o/webmail/.well-known/openid-configuration",
                           verify=tls_files["ca"], timeout=5).json()
        assert doc["issuer"] == f"{base_url}/application/o/webmail/"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "listening on https://127.0.0.1:" in stderr
    assert "GET /-/health/live/ -> 200" in stderr
    assert "discovery: webmail" in stderr
    assert stderr.rstrip().endswith("standin: stopped")
    assert WEBMAIL_SECRET not in stderr


def test_module_entry_point_refuses_a_bad_config(tmp_path):
    config_file = tmp_path / "bad.json"
    config_file.write_text(json.dumps({"base_url": "https://auth.example.test/with/path"}))
    env = dict(os.environ, PYTHONPATH=str(E2E_DIR))
    result = subprocess.run([sys.executable, "-m", "standin", str(config_file)], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "cannot start" in result.stderr and "base_url" in result.stderr


# --- signing keys per application, rotation on demand ---------------------------------------


def test_each_application_publishes_its_own_key(standin):
    (webmail,) = jwks(standin.base_url, "webmail", verify=standin.ca)["keys"]
    (other,) = jwks(standin.base_url, "other", verify=standin.ca)["keys"]
    assert webmail["kid"] != other["kid"] and webmail["n"] != other["n"]


def test_a_rotated_key_signs_new_tokens_and_alone_is_published(standin):
    """As when an authentik admin gives the provider another certificate-key pair."""
    def tokens() -> dict:
        grant = get_authorization_code(standin.base_url, "webmail-client", WEBMAIL_REDIRECT, "alice", "alice-pw",
                                       FULL_SCOPE, verify=standin.ca)
        return exchange_code(standin.base_url, *WEBMAIL, grant["code"], WEBMAIL_REDIRECT, grant["code_verifier"],
                             verify=standin.ca)

    before = tokens()
    (old_key,) = jwks(standin.base_url, "webmail", verify=standin.ca)["keys"]
    (other_before,) = jwks(standin.base_url, "other", verify=standin.ca)["keys"]
    new_kid = rotate_signing_key(standin.base_url, "webmail", verify=standin.ca)
    (new_key,) = jwks(standin.base_url, "webmail", verify=standin.ca)["keys"]
    assert new_key["kid"] == new_kid != old_key["kid"]
    assert jwt.get_unverified_header(before["access_token"])["kid"] == old_key["kid"]
    after = tokens()
    assert jwt.get_unverified_header(after["access_token"])["kid"] == new_kid
    verify_rs256(standin, after["access_token"], "webmail", "webmail-client")
    # authentik keeps its tokens in the database: the old one still introspects active.
    assert introspect(standin.base_url, before["access_token"], *WEBMAIL, verify=standin.ca)["active"] is True
    # Other applications keep their keys.
    assert jwks(standin.base_url, "other", verify=standin.ca)["keys"] == [other_before]
    with pytest.raises(requests.HTTPError):
        rotate_signing_key(standin.base_url, "hs", verify=standin.ca)  # no signing key to rotate


def test_the_issuer_is_the_host_the_token_request_came_to(standin):
    """authentik builds `iss` from the request: a client reaching it under another name gets that name."""
    default = login_and_get_tokens(standin.base_url, *WEBMAIL, WEBMAIL_REDIRECT, "alice", "alice-pw", FULL_SCOPE,
                                   verify=standin.ca)
    assert jwt.decode(default["access_token"], options={"verify_signature": False})["iss"] == standin.issuer("webmail")
    internal = login_and_get_tokens(standin.base_url, *WEBMAIL, WEBMAIL_REDIRECT, "alice", "alice-pw", FULL_SCOPE,
                                    verify=standin.ca, host="authentik.internal:9443")
    for token in (internal["access_token"], internal["id_token"]):
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["iss"] == "https://authentik.internal:9443/application/o/webmail/"


# --- app passwords at the token endpoint (authentik's password / client_credentials grants) -------

USERS_API = "/api/v3/core/users/"
GROUPS_API = "/api/v3/core/groups/"
INVALID_GRANT_DESCRIPTION = (
    "The provided authorization grant or refresh token is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client"
)


def app_password_answer(standin, username: str, password: str, *, client=WEBMAIL, auth=None,
                        grant_type: str = "password", scope: str | None = "openid email") -> requests.Response:
    data = {"grant_type": grant_type, "username": username, "password": password}
    if scope is not None:
        data["scope"] = scope
    if auth is None:
        data.update(client_id=client[0], client_secret=client[1])
    return post_token(standin, data, auth=auth)


def assert_invalid_grant(response: requests.Response) -> None:
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error", "error_description", "request_id"}
    assert body["error"] == "invalid_grant"
    assert body["error_description"] == INVALID_GRANT_DESCRIPTION
    assert re.fullmatch(r"[0-9a-f]{32}", body["request_id"])
    assert response.headers["X-authentik-id"] == body["request_id"]
    assert response.headers["Cache-Control"] == "no-store"


def test_app_password_gets_a_token_with_either_grant_and_client_auth_style(standin):
    """authentik treats grant_type=password exactly like client_credentials; the client
    may identify itself by form fields or HTTP Basic."""
    for grant_type in ("password", "client_credentials"):
        for method in ("client_secret_post", "client_secret_basic"):
            tokens = app_password_token(standin.base_url, *WEBMAIL, "alice", ALICE_APP_PASSWORD,
                                        verify=standin.ca, grant_type=grant_type, auth_method=method)
            assert set(tokens) == {"access_token", "token_type", "scope", "expires_in", "id_token"}
            assert tokens["token_type"] == "Bearer"
            assert tokens["scope"] == "openid email"
            assert tokens["expires_in"] == 600  # the provider's access_token_validity
            access = verify_rs256(standin, tokens["access_token"], "webmail", "webmail-client")
            assert access["azp"] == "webmail-client" and access["uid"]
            assert access["email"] == "alice@example.test"
            assert access["sub"] == hashlib.sha256(b"standin-alice").hexdigest()
            assert "preferred_username" not in access  # profile not asked for
            id_token = verify_rs256(standin, tokens["id_token"], "webmail", "webmail-client")
            assert id_token["email"] == "alice@example.test" and "azp" not in id_token
    # Introspection knows the token, as authentik stores it like any access token.
    info = introspect(standin.base_url, tokens["access_token"], *WEBMAIL, verify=standin.ca)
    assert info["active"] is True and info["email"] == "alice@example.test"


def test_app_password_grant_does_not_check_the_client_secret(standin):
    """authentik checks the client secret only for authorization_code and refresh_token;
    for these grants the client_id alone picks the provider."""
    for extra in ({"client_id": "webmail-client"}, {"client_id": "webmail-client", "client_secret": "wrong"}):
        response = post_token(standin, {"grant_type": "password", "username": "alice",
                                        "password": ALICE_APP_PASSWORD, "scope": "openid", **extra})
        assert response.status_code == 200, response.text
    unknown = post_token(standin, {"grant_type": "password", "username": "alice", "password": ALICE_APP_PASSWORD,
                                   "client_id": "nobody"})
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_client"


def test_app_password_in_the_client_secret_as_base64(standin):
    """authentik's fallback without a username: client_secret = base64("username:password")."""
    secret = base64.b64encode(f"alice:{ALICE_APP_PASSWORD}".encode()).decode()
    response = post_token(standin, {"grant_type": "client_credentials", "client_id": "webmail-client",
                                    "client_secret": secret, "scope": "openid email"})
    assert response.status_code == 200, response.text
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["email"] == \
        "alice@example.test"
    assert_invalid_grant(post_token(standin, {"grant_type": "client_credentials", "client_id": "webmail-client",
                                              "client_secret": "not base64 at all"}))


def test_app_password_scope_handling(standin):
    none = app_password_token(standin.base_url, *WEBMAIL, "alice", ALICE_APP_PASSWORD, verify=standin.ca,
                              scope=None)
    assert none["scope"] == ""
    claims = verify_rs256(standin, none["access_token"], "webmail", "webmail-client")
    assert "email" not in claims and claims["aud"] == "webmail-client"
    # Without openid there is no id_token claim set worth introspecting: inactive, as for the code flow.
    assert introspect(standin.base_url, none["access_token"], *WEBMAIL, verify=standin.ca) == {"active": False}
    dropped = app_password_token(standin.base_url, *WEBMAIL, "alice", ALICE_APP_PASSWORD, verify=standin.ca,
                                 scope="openid bogus email profile")
    assert dropped["scope"] == "openid email profile"
    claims = verify_rs256(standin, dropped["access_token"], "webmail", "webmail-client")
    assert claims["preferred_username"] == "alice" and claims["email"] == "alice@example.test"
    other = app_password_token(standin.base_url, *OTHER, "alice", ALICE_APP_PASSWORD, verify=standin.ca,
                               scope="openid email profile dovecotprofile")
    assert other["scope"] == "openid email"  # the other provider has neither profile nor dovecotprofile


def test_app_password_refusals_are_all_the_same_invalid_grant(standin):
    mark = standin.mark()
    cases = {
        "wrong password": ("alice", "not-an-app-password"),
        "login password": ("alice", "alice-pw"),
        "another user's app password": ("alice", BOB_APP_PASSWORD),
        "own app password, other username": ("bob", ALICE_APP_PASSWORD),
        "API token": ("alice", ALICE_API_KEY),
        "expired app password": ("alice", ALICE_EXPIRED_APP_PASSWORD),
        "email instead of username": ("alice@example.test", ALICE_APP_PASSWORD),
        "unknown user": ("nobody", ALICE_APP_PASSWORD),
        "empty password": ("alice", ""),
    }
    for case, (username, password) in cases.items():
        for auth in (None, WEBMAIL):
            response = app_password_answer(standin, username, password, auth=auth)
            assert response.status_code == 400, case
            assert_invalid_grant(response)
    logs = standin.logs_since(mark)
    assert "token alice-api (intent api, user alice)" in logs
    assert "token alice-old-phone expired (deleted, as authentik does on use)" in logs
    for secret in (ALICE_APP_PASSWORD, BOB_APP_PASSWORD, ALICE_API_KEY, ALICE_EXPIRED_APP_PASSWORD, "alice-pw"):
        assert secret not in logs


def test_app_password_of_a_user_outside_the_allowed_group(standin):
    """The application's policy (allowed_group) applies to app passwords too."""
    mark = standin.mark()
    assert_invalid_grant(app_password_answer(standin, "bob", BOB_APP_PASSWORD))
    assert "bob is not in group 'webmail-users' (application policy)" in standin.logs_since(mark)
    # The other application has no group binding.
    assert app_password_answer(standin, "bob", BOB_APP_PASSWORD, client=OTHER).status_code == 200


def test_deleted_app_password_and_deactivated_user_are_refused(fresh_standin):
    standin = fresh_standin
    add_token(standin.base_url, "carol-phone", "carol-app-password-0123456789", "carol", verify=standin.ca,
              expiring=False)
    assert app_password_answer(standin, "carol", "carol-app-password-0123456789").status_code == 200
    delete_token(standin.base_url, "carol-phone", verify=standin.ca)
    assert_invalid_grant(app_password_answer(standin, "carol", "carol-app-password-0123456789"))
    with pytest.raises(FlowError, match="404"):
        delete_token(standin.base_url, "carol-phone", verify=standin.ca)

    # An app password that expires in the future works until then.
    add_token(standin.base_url, "carol-tablet", "carol-tablet-password-0123456789", "carol", verify=standin.ca,
              expires="2999-01-01T00:00:00Z")
    assert app_password_answer(standin, "carol", "carol-tablet-password-0123456789").status_code == 200

    before = app_password_token(standin.base_url, *WEBMAIL, "alice", ALICE_APP_PASSWORD, verify=standin.ca)
    mark = standin.mark()
    update_user(standin.base_url, "alice", verify=standin.ca, is_active=False)
    # CVE-2025-64521, fixed in authentik 2025.8.5 / 2025.10.2: an inactive user's app password is refused.
    assert_invalid_grant(app_password_answer(standin, "alice", ALICE_APP_PASSWORD))
    logs = standin.logs_since(mark)
    assert "no active user 'alice'" in logs and "OAuth token(s) deleted" in logs
    # authentik deletes a deactivated user's tokens: introspection no longer knows them,
    # and the login page refuses the user.
    assert introspect(standin.base_url, before["access_token"], *WEBMAIL, verify=standin.ca) == {"active": False}
    with pytest.raises(FlowError, match="login refused|login form"):
        webmail_tokens(standin)
    update_user(standin.base_url, "alice", verify=standin.ca, is_active=True)
    assert app_password_answer(standin, "alice", ALICE_APP_PASSWORD).status_code == 200


def test_discovery_lists_the_app_password_grants(standin):
    doc = requests.get(f"{standin.base_url}/application/o/webmail/.well-known/openid-configuration",
                       verify=standin.ca, timeout=10).json()
    assert {"password", "client_credentials"} <= set(doc["grant_types_supported"])


# --- the directory API (/api/v3/core/users/, /groups/) ------------------------------------------


def test_directory_api_refuses_without_a_usable_api_token(fresh_standin):
    standin = fresh_standin
    add_token(standin.base_url, "svc-old", "svc-old-key-0123456789", "svc-directory", verify=standin.ca,
              intent="api", expires="2020-01-01T00:00:00Z")
    cases = [
        (None, "Authentication credentials were not provided."),
        ("", "Authentication credentials were not provided."),
        ("garbage-key", "Token invalid/expired"),
        (ALICE_APP_PASSWORD, "Token invalid/expired"),  # an app password is no API token
        ("svc-old-key-0123456789", "Token invalid/expired"),  # expired
        (ALICE_API_KEY, "You do not have permission to perform this action."),  # alice may not view users
    ]
    for path in (USERS_API, GROUPS_API):
        for key, detail in cases:
            response = api_get(standin.base_url, path, key, verify=standin.ca)
            assert response.status_code == 403, (path, key)
            assert response.json() == {"detail": detail}, (path, key)
    basic = requests.get(standin.base_url + USERS_API, headers={"Authorization": basic_auth_header("a", "b")},
                         verify=standin.ca, timeout=10)
    assert basic.status_code == 403 and basic.json() == {"detail": "Authentication credentials were not provided."}
    # A deactivated token user: Token invalid/expired.
    update_user(standin.base_url, "svc-directory", verify=standin.ca, is_active=False)
    response = api_get(standin.base_url, USERS_API, DIRECTORY_API_KEY, verify=standin.ca)
    assert response.status_code == 403 and response.json() == {"detail": "Token invalid/expired"}
    update_user(standin.base_url, "svc-directory", verify=standin.ca, is_active=True)
    assert api_get(standin.base_url, USERS_API, DIRECTORY_API_KEY, verify=standin.ca).status_code == 200
    logs = standin.logs_since(0)
    for secret in (DIRECTORY_API_KEY, ALICE_API_KEY, ALICE_APP_PASSWORD, "svc-old-key-0123456789"):
        assert secret not in logs


def test_directory_api_permissions_come_from_roles_or_a_superuser_group(fresh_standin):
    standin = fresh_standin
    assert api_get(standin.base_url, USERS_API, ALICE_API_KEY, verify=standin.ca).status_code == 403
    # A role with view_user only, through a group: users yes, groups no.
    put_group(standin.base_url, "user-readers", verify=standin.ca, roles=["user-viewer"])
    update_user(standin.base_url, "alice", verify=standin.ca, groups=["webmail-users", "staff", "user-readers"])
    assert api_get(standin.base_url, USERS_API, ALICE_API_KEY, verify=standin.ca).status_code == 200
    response = api_get(standin.base_url, GROUPS_API, ALICE_API_KEY, verify=standin.ca)
    assert response.status_code == 403
    assert response.json() == {"detail": "You do not have permission to perform this action."}
    with pytest.raises(FlowError, match="400"):
        put_group(standin.base_url, "user-readers", verify=standin.ca, roles=["no-such-role"])
    # A superuser group may do everything.
    update_user(standin.base_url, "alice", verify=standin.ca, groups=["webmail-users", "staff", "admins"])
    put_group(standin.base_url, "admins", verify=standin.ca, is_superuser=True)
    for path in (USERS_API, GROUPS_API):
        assert api_get(standin.base_url, path, ALICE_API_KEY, verify=standin.ca).status_code == 200
    users = api_get(standin.base_url, USERS_API, ALICE_API_KEY, verify=standin.ca).json()["results"]
    assert {u["username"]: u["is_superuser"] for u in users}["alice"] is True


def test_users_list_pages_like_authentik(standin):
    def users(**params) -> requests.Response:
        return api_get(standin.base_url, USERS_API, DIRECTORY_API_KEY, verify=standin.ca, params=params)

    body = users().json()
    assert set(body) == {"pagination", "results", "autocomplete"} and body["autocomplete"] == {}
    assert body["pagination"] == {"next": 0, "previous": 0, "count": 4, "current": 1, "total_pages": 1,
                                  "start_index": 1, "end_index": 4}
    assert [u["username"] for u in body["results"]] == ["alice", "bob", "carol", "svc-directory"]
    alice = body["results"][0]
    assert set(alice) >= {"pk", "username", "name", "is_active", "email", "attributes", "groups", "groups_obj",
                          "type", "uid", "uuid", "path", "is_superuser"}
    assert alice["pk"] == 1 and alice["email"] == "alice@example.test" and alice["type"] == "internal"
    groups = {g["name"]: g for g in api_get(standin.base_url, GROUPS_API, DIRECTORY_API_KEY, verify=standin.ca,
                                            params={"page_size": 100}).json()["results"]}
    assert alice["groups"] == [groups["webmail-users"]["pk"], groups["staff"]["pk"]]
    assert [g["name"] for g in alice["groups_obj"]] == ["webmail-users", "staff"]
    svc = body["results"][3]
    assert svc["type"] == "service_account" and svc["path"] == "goauthentik.io/service-accounts"

    page = users(page_size=2, page=2, include_groups="false").json()
    assert page["pagination"] == {"next": 0, "previous": 1, "count": 4, "current": 2, "total_pages": 2,
                                  "start_index": 3, "end_index": 4}
    assert [u["username"] for u in page["results"]] == ["carol", "svc-directory"]
    assert all(u["groups_obj"] is None and isinstance(u["groups"], list) for u in page["results"])
    first = users(page_size=3).json()["pagination"]
    assert first["next"] == 2 and first["total_pages"] == 2 and first["end_index"] == 3
    # 2025.12+: at most 100 per page; an unusable page_size falls back to DRF's 100.
    assert users(page_size=1000).json()["pagination"]["total_pages"] == 1
    assert users(page_size=0).json()["pagination"]["count"] == 4
    for bad_page in (3, 0, "x"):
        response = users(page_size=2, page=bad_page)
        assert response.status_code == 404 and response.json() == {"detail": "Invalid page."}
    assert users(page="last", page_size=3).json()["pagination"]["current"] == 2


def test_users_list_filters(fresh_standin):
    standin = fresh_standin

    def names(**params) -> list[str]:
        response = api_get(standin.base_url, USERS_API, DIRECTORY_API_KEY, verify=standin.ca, params=params)
        assert response.status_code == 200, response.text
        return [u["username"] for u in response.json()["results"]]

    update_user(standin.base_url, "bob", verify=standin.ca, is_active=False)
    assert names(is_active="true") == ["alice", "carol", "svc-directory"]
    assert names(is_active="false") == ["bob"]
    assert names(is_active="1") == ["alice", "bob", "carol", "svc-directory"]  # Django ignores 1/0/yes
    assert names(groups_by_name="webmail-users") == ["alice", "carol"]
    assert names(groups_by_name=["staff", "webmail-users"]) == ["alice", "bob", "carol"]
    assert names(groups_by_name="staff", is_active="true") == ["alice"]
    unknown = api_get(standin.base_url, USERS_API, DIRECTORY_API_KEY, verify=standin.ca,
                      params={"groups_by_name": "nope"})
    assert unknown.status_code == 400
    assert unknown.json() == {"groups_by_name": ["Select a valid choice. nope is not one of the available choices."]}


def test_groups_list(standin):
    response = api_get(standin.base_url, GROUPS_API, DIRECTORY_API_KEY, verify=standin.ca)
    body = response.json()
    assert [g["name"] for g in body["results"]] == ["directory-readers", "staff", "webmail-users"]
    readers, staff, webmail = body["results"]
    assert staff["attributes"] == {"mail_address": "staff@example.test"}
    assert staff["users"] == [1, 2]
    assert [u["username"] for u in staff["users_obj"]] == ["alice", "bob"]
    assert webmail["users"] == [1, 3] and webmail["attributes"] == {}
    assert readers["roles_obj"][0]["name"] == "directory-reader" and readers["roles"] == [readers["roles_obj"][0]["pk"]]
    for group in body["results"]:
        assert str(uuid.UUID(group["pk"])) == group["pk"]
        assert group["is_superuser"] is False and group["parent"] is None
    bare = api_get(standin.base_url, GROUPS_API, DIRECTORY_API_KEY, verify=standin.ca,
                   params={"include_users": "false", "page_size": 1, "page": 2}).json()
    assert bare["pagination"]["count"] == 3 and bare["pagination"]["next"] == 3
    assert bare["results"][0]["users"] == [1, 2] and bare["results"][0]["users_obj"] is None
    # Stable group pks: the same config gives the same UUIDs.
    again = parse_config(standin.config)
    assert again.group_by_name("staff").pk == staff["pk"]


def test_directory_hooks_change_what_the_api_answers(fresh_standin):
    standin = fresh_standin
    added = add_user(standin.base_url, {"username": "dave", "password": "x", "email": "dave@example.test",
                                        "groups": ["webmail-users", "new-team"],
                                        "attributes": {"mail_aliases": ["d@example.test"]}}, verify=standin.ca)
    assert added["pk"] == 5 and added["attributes"] == {"mail_aliases": ["d@example.test"]}
    updated = update_user(standin.base_url, "dave", verify=standin.ca, email="david@example.test",
                          attributes={"mail_quota": "2G"})
    assert updated["email"] == "david@example.test" and updated["attributes"] == {"mail_quota": "2G"}
    group = put_group(standin.base_url, "new-team", verify=standin.ca, attributes={"mail_address": "team@example.test"})
    assert group["users"] == [5] and group["attributes"] == {"mail_address": "team@example.test"}
    body = api_get(standin.base_url, GROUPS_API, DIRECTORY_API_KEY, verify=standin.ca).json()
    assert "new-team" in [g["name"] for g in body["results"]]
    with pytest.raises(FlowError, match="404"):
        update_user(standin.base_url, "nobody", verify=standin.ca, is_active=False)
    with pytest.raises(FlowError, match="400"):
        update_user(standin.base_url, "dave", verify=standin.ca, password="nope")
    with pytest.raises(FlowError, match="400"):
        add_user(standin.base_url, {"username": "dave", "password": "x"}, verify=standin.ca)
    with pytest.raises(FlowError, match="400"):
        add_token(standin.base_url, "t", "k", "nobody", verify=standin.ca)


def test_directory_faults(fresh_standin):
    standin = fresh_standin

    def users(**params) -> requests.Response:
        return api_get(standin.base_url, USERS_API, DIRECTORY_API_KEY, verify=standin.ca, params=params)

    assert set_directory_fault(standin.base_url, "error", verify=standin.ca) == "none"
    assert users().status_code == 500
    assert api_get(standin.base_url, GROUPS_API, DIRECTORY_API_KEY, verify=standin.ca).status_code == 500
    set_directory_fault(standin.base_url, "down", verify=standin.ca)
    with pytest.raises(requests.ConnectionError):
        users()
    set_directory_fault(standin.base_url, "cut-paging", verify=standin.ca)
    first, second = users(page_size=2, page=1).json(), users(page_size=2, page=2).json()
    assert first["pagination"]["count"] == 6 and first["pagination"]["total_pages"] == 3
    assert second["pagination"]["next"] == 0 and len(first["results"] + second["results"]) == 4
    with pytest.raises(FlowError, match="400"):
        set_directory_fault(standin.base_url, "flaky", verify=standin.ca)
    set_directory_fault(standin.base_url, "none", verify=standin.ca)
    assert users().json()["pagination"]["count"] == 4
    # The OAuth endpoints are not affected by the directory's faults.
    set_directory_fault(standin.base_url, "down", verify=standin.ca)
    assert app_password_answer(standin, "alice", ALICE_APP_PASSWORD).status_code == 200
    logs = standin.logs_since(0)
    assert "directory fault: none -> error" in logs and "fault 'down' -> connection reset" in logs

"""Tests of the authentik stand-in (tests/e2e/standin) over real HTTPS on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import ssl
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests

from standin import ConfigError, make_server, parse_config, timedelta_from_string
from standin.client import (
    FlowError,
    TokenEndpointError,
    basic_auth_header,
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


@pytest.fixture(scope="session")
def standin(tls_files):
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
    assert post_token(standin, {"grant_type": "password", "client_id": "webmail-client",
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

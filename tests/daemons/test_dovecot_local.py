"""Dovecot with the default token_validation (local): each access token is a
JWT checked in Dovecot with the keys jwks-sync copied from (fake) authentik's
JWKS. Real RS256 tokens, signed here with keys the fake publishes."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any, Iterator

import docker
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from components.render import layout
from daemon_harness import (
    ALICE,
    BOB,
    REFRESH_TOKEN,
    Pki,
    Resources,
    Variant,
    banner,
    exec_in,
    introspection_requests,
    make_variant,
    published_port,
    set_jwks,
    start_dovecot,
    start_fake_authentik,
    wait_until,
)
from test_dovecot import imap_login, oauthbearer, xoauth2

WAIT_FOR_SYNC = 60  # s; jwks-sync runs every 5 s here


def _b64url_uint(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).decode().rstrip("=")


@dataclass
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey

    @classmethod
    def new(cls, kid: str) -> "SigningKey":
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid,
                "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}


def jwks(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [key.jwk() for key in keys]}


@dataclass
class LocalStack:
    variant: Variant
    authentik: Any
    dovecot: Any
    port: int
    key: SigningKey

    def token(self, key: SigningKey | None = None, **claims: Any) -> str:
        """An access token as authentik issues it (claims of the id_token, azp, uid)."""
        now = int(time.time())
        payload = {
            "iss": self.variant.settings.token_issuers[0], "sub": "hashed-id", "aud": self.variant.client_id,
            "exp": now + 300, "iat": now, "auth_time": now, "acr": "goauthentik.io/providers/oauth2/default",
            "email": ALICE, "email_verified": True, "azp": self.variant.client_id, "uid": "x" * 40,
        }
        payload.update(claims)
        key = key or self.key
        return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid})

    def login(self, user: str, token: str, mechanism: str = "XOAUTH2") -> str:
        payload = xoauth2(user, token) if mechanism == "XOAUTH2" else oauthbearer(user, token)
        return imap_login(self.port, mechanism, payload)

    def dovecot_log(self) -> str:
        return self.dovecot.logs().decode(errors="replace")

    def logs(self) -> str:
        return self.authentik.logs().decode(errors="replace")[-3000:] + self.dovecot_log()[-5000:]


@pytest.fixture(scope="module", params=["dev", "prod"])
def local(request: pytest.FixtureRequest, docker_client: docker.DockerClient, images: dict[str, str], pki: Pki
          ) -> Iterator[LocalStack]:
    """A fake authentik serving one signing key, and Dovecot validating locally (dev: HTTP, prod: HTTPS + CA)."""
    variant = make_variant(request.param, pki, token_validation="local", jwks_refresh_seconds=5)
    key = SigningKey.new("kid-first")
    resources = Resources(docker_client, f"local-{request.param}")
    try:
        network = resources.network()
        authentik = start_fake_authentik(resources, images, network, variant, pki, jwks=jwks(key))
        wait_until("the fake authentik", lambda: b"listening" in authentik.logs(), [authentik])
        dovecot = start_dovecot(resources, images, network, variant)
        port = published_port(dovecot, layout.IMAP_PORT)
        wait_until("Dovecot's IMAP greeting", lambda: banner(port, b"* OK"), [authentik, dovecot])
        yield LocalStack(variant, authentik, dovecot, port, key)
    finally:
        resources.close()


def eventually(what: str, check: Any, stack: LocalStack) -> None:
    """Waits (bounded) for jwks-sync's next round to make `check` true."""
    deadline = time.monotonic() + WAIT_FOR_SYNC
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    pytest.fail(f"not within {WAIT_FOR_SYNC}s: {what}\n{stack.logs()}")


def test_the_image_fetched_authentiks_key_before_the_first_login(local: LocalStack) -> None:
    listing = exec_in(local.dovecot, ["find", layout.OAUTH2_KEY_DIR, "-type", "f"])
    assert listing.split() == [f"{layout.OAUTH2_KEY_DIR}/{local.variant.client_id}/RS256/kid-first"], listing
    pem = exec_in(local.dovecot, ["cat", listing.split()[0]])
    assert pem.startswith("-----BEGIN PUBLIC KEY-----"), pem


def test_a_valid_token_logs_in_with_both_mechanisms_without_asking_authentik(local: LocalStack) -> None:
    before = len(introspection_requests(local.authentik))
    assert local.login(ALICE, local.token()) == "OK", local.logs()
    assert local.login(ALICE, local.token(), "OAUTHBEARER") == "OK", local.logs()
    assert local.login(BOB, local.token(email=BOB)) == "OK", local.logs()
    asked = [r["request"] for r in introspection_requests(local.authentik)[before:]]
    assert all(r.startswith("GET /application/o/webmail/jwks/ ") for r in asked), asked  # only jwks-sync's rounds


def test_tokens_from_either_issuer_log_in_when_authentik_has_an_internal_url(
    docker_client: docker.DockerClient, images: dict[str, str], pki: Pki
) -> None:
    """authentik writes the Host of the token request into `iss`: both kinds must work."""
    variant = make_variant("dev", pki, token_validation="local", authentik_internal_url="http://authentik:9000",
                           authentik_url="https://auth.example.com")
    key = SigningKey.new("kid-issuers")
    resources = Resources(docker_client, "local-issuers")
    try:
        network = resources.network()
        authentik = start_fake_authentik(resources, images, network, variant, pki, jwks=jwks(key))
        wait_until("the fake authentik", lambda: b"listening" in authentik.logs(), [authentik])
        dovecot = start_dovecot(resources, images, network, variant)
        port = published_port(dovecot, layout.IMAP_PORT)
        wait_until("Dovecot's IMAP greeting", lambda: banner(port, b"* OK"), [authentik, dovecot])
        stack = LocalStack(variant, authentik, dovecot, port, key)
        for issuer in ("https://auth.example.com/application/o/webmail/", "http://authentik:9000/application/o/webmail/"):
            assert stack.login(ALICE, stack.token(iss=issuer)) == "OK", (issuer, stack.logs())
        other = stack.login(ALICE, stack.token(iss="https://auth.example.com/application/o/other-app/"))
        assert other.startswith("refused"), other
    finally:
        resources.close()


@pytest.mark.parametrize(
    "case, reason",
    [
        ("unknown key", "RS256 key 'kid-unknown' not found"),
        ("another audience", "aud"),
        ("another issuer", "Issuer 'http://evil.example.com/application/o/webmail/' is not allowed"),
        ("expired", "Token has expired"),
        ("another user", "did not match"),
        ("refresh token", "Not a JWT token"),
        ("signed with the client secret", "HS256 key"),
        ("bad signature", "Bad signature"),
    ],
)
def test_refused_tokens(local: LocalStack, case: str, reason: str) -> None:
    now = int(time.time())
    user, token = ALICE, {
        "unknown key": lambda: local.token(SigningKey.new("kid-unknown")),
        "another audience": lambda: local.token(aud="other-client-id"),
        "another issuer": lambda: local.token(iss="http://evil.example.com/application/o/webmail/"),
        "expired": lambda: local.token(exp=now - 5, iat=now - 60),
        "another user": lambda: local.token(),
        "refresh token": lambda: REFRESH_TOKEN,
        "signed with the client secret": lambda: jwt.encode(
            {"iss": local.variant.settings.token_issuers[0], "aud": local.variant.client_id, "sub": "x",
             "azp": local.variant.client_id, "exp": now + 300, "email": ALICE},
            local.variant.client_secret, algorithm="HS256", headers={"kid": local.key.kid}),
        "bad signature": lambda: local.token(SigningKey.new(local.key.kid)),
    }[case]()
    if case == "another user":
        user = BOB
    logged = len(local.dovecot_log())
    answer = local.login(user, token)
    assert answer.startswith("refused"), answer
    wait_until(f"Dovecot's reason for refusing ({reason})", lambda: reason in local.dovecot_log()[logged:],
               [local.dovecot], seconds=10)
    # The next login from the same address is not delayed (no auth penalty).
    assert local.login(ALICE, local.token()) == "OK"


def test_a_key_rotation_is_picked_up_without_restarting_dovecot(local: LocalStack) -> None:
    local.dovecot.reload()
    started = local.dovecot.attrs["State"]["StartedAt"]
    old_token = local.token()
    new_key = SigningKey.new("kid/rotated%")  # Dovecot escapes / and % in file names
    # authentik publishes the new key; tokens are signed with it from now on.
    set_jwks(local.authentik, jwks(local.key, new_key))
    eventually("a token of the new key logs in", lambda: local.login(ALICE, local.token(new_key)) == "OK", local)
    assert local.login(ALICE, old_token) == "OK", local.logs()  # both keys while both are published
    # The old key is withdrawn: its tokens stop working, the new ones go on.
    set_jwks(local.authentik, jwks(new_key))
    eventually("a token of the withdrawn key is refused",
               lambda: local.login(ALICE, old_token).startswith("refused"), local)
    assert local.login(ALICE, local.token(new_key)) == "OK", local.logs()
    files = exec_in(local.dovecot, ["ls", f"{layout.OAUTH2_KEY_DIR}/{local.variant.client_id}/RS256"]).split()
    assert files == ["kid%2frotated%25"], files
    local.dovecot.reload()
    assert local.dovecot.attrs["State"]["StartedAt"] == started and local.dovecot.status == "running"
    local.key = new_key


def test_a_failing_jwks_keeps_the_keys_dovecot_has(local: LocalStack) -> None:
    set_jwks(local.authentik, None)  # the fake answers 503 from now on
    try:
        failures = local.dovecot_log().count("keeping the current keys")
        eventually("jwks-sync met a failed fetch",
                   lambda: local.dovecot_log().count("keeping the current keys") > failures, local)
        assert local.login(ALICE, local.token()) == "OK", local.logs()
        set_jwks(local.authentik, {"keys": []})  # an answer without keys is no reason to drop them either
        failures = local.dovecot_log().count("keeping the current keys")
        eventually("jwks-sync met an empty key list",
                   lambda: local.dovecot_log().count("keeping the current keys") > failures, local)
        assert local.login(ALICE, local.token()) == "OK", local.logs()
    finally:
        set_jwks(local.authentik, jwks(local.key))

"""Signing key, JWKS, and the in-memory store of codes and tokens.

Like authentik, access tokens are JWTs (the id_token's claims plus ``azp`` and
``uid``) stored server-side: introspection and userinfo look the token up in
the store, so a revoked or unknown token is refused even when its signature is
good. Refresh tokens are opaque random strings; codes are uuid4 hex strings.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import string
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

# HS256 with a client secret (providers without a signing key) is what authentik
# does, whatever the secret's length; newer PyJWT warns about short HMAC keys.
warnings.filterwarnings("ignore", message=r"The HMAC key is \d+ bytes long")

ACR_AUTHENTIK_DEFAULT = "goauthentik.io/providers/oauth2/default"
_ALPHANUM = string.ascii_letters + string.digits


def generate_id(length: int = 40) -> str:
    """authentik.lib.generators.generate_id: random letters and digits."""
    return "".join(secrets.choice(_ALPHANUM) for _ in range(length))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64url_uint(value: int) -> str:
    length = max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(length, "big"))


def token_hash(token: str) -> str:
    """at_hash/c_hash: base64url of the left half of the SHA-256 digest."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


def fingerprint(token: str | None) -> str:
    """A short, non-reversible name for a token, safe to log."""
    if not token:
        return "<none>"
    return "fp:" + hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:10]


class SigningKey:
    """The RSA key pair (2048 bits, generated at start) that signs tokens of every
    provider with ``signing_key: true``, like authentik's self-signed certificate."""

    def __init__(self, common_name: str = "authentik Self-signed Certificate"):
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public_numbers = self.private_key.public_key().public_numbers()
        self.n = _b64url_uint(public_numbers.n)
        self.e = _b64url_uint(public_numbers.e)
        # RFC 7638 thumbprint as kid (authentik derives its kid from the key, too;
        # consumers must take it from the JWKS).
        thumbprint_input = json.dumps({"e": self.e, "kty": "RSA", "n": self.n}, separators=(",", ":"), sort_keys=True)
        self.kid = _b64url(hashlib.sha256(thumbprint_input.encode("ascii")).digest())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self.private_key, hashes.SHA256())
        )

    def jwk(self) -> dict[str, Any]:
        """The public key as authentik's JWKS view renders it."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return {
            "alg": "RS256",
            "kid": self.kid,
            "kty": "RSA",
            "use": "sig",
            "n": self.n,
            "e": self.e,
            "x5c": [base64.b64encode(der).decode("ascii")],
            "x5t": _b64url(self.certificate.fingerprint(hashes.SHA1())),  # noqa: S303 - as authentik
            "x5t#S256": _b64url(self.certificate.fingerprint(hashes.SHA256())),
        }

    def public_pem(self) -> str:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def encode(self, provider, payload: dict[str, Any]) -> str:
        """authentik's OAuth2Provider.encode: RS256 with the signing key and its kid,
        or HS256 with the client secret when the provider has no signing key."""
        if provider.signing_key:
            return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})
        return jwt.encode(payload, provider.client_secret, algorithm="HS256")


@dataclass
class Grant:
    """An authorization code, access token or refresh token, with its id_token claims."""

    kind: str  # "code" | "access" | "refresh"
    value: str
    provider_client_id: str
    username: str
    scope: list[str]
    expires: float
    auth_time: int
    nonce: str | None = None
    revoked: bool = False
    id_token: dict[str, Any] = field(default_factory=dict)
    # Codes only.
    redirect_uri: str = ""
    code_challenge: str | None = None
    code_challenge_method: str | None = None

    def is_expired(self, now: float | None = None) -> bool:
        return self.expires < (time.time() if now is None else now)

    @property
    def has_openid(self) -> bool:
        return "openid" in self.scope


class GrantStore:
    """Thread-safe in-memory store of codes and tokens."""

    def __init__(self):
        self._lock = threading.Lock()
        self._grants: dict[str, dict[str, Grant]] = {"code": {}, "access": {}, "refresh": {}}

    def add(self, grant: Grant) -> None:
        with self._lock:
            self._grants[grant.kind][grant.value] = grant

    def get(self, kind: str, value: str | None) -> Grant | None:
        if not value:
            return None
        with self._lock:
            return self._grants[kind].get(value)

    def delete(self, grant: Grant) -> None:
        with self._lock:
            self._grants[grant.kind].pop(grant.value, None)

    def take_code(self, grant: Grant) -> bool:
        """Remove a code; False when it was already used (concurrent exchange)."""
        with self._lock:
            return self._grants["code"].pop(grant.value, None) is not None

    def delete_user(self, username: str) -> int:
        """Delete every code and token of a user (authentik does so when the user is
        deactivated); returns how many."""
        removed = 0
        with self._lock:
            for grants in self._grants.values():
                for value in [v for v, g in grants.items() if g.username == username]:
                    del grants[value]
                    removed += 1
        return removed

    def revoke(self, grant: Grant) -> None:
        with self._lock:
            grant.revoked = True

    def purge_expired(self, older_than: float = 3600.0) -> None:
        """Drop grants that expired long ago (keeps memory bounded in long runs)."""
        cutoff = time.time() - older_than
        with self._lock:
            for grants in self._grants.values():
                for value in [v for v, g in grants.items() if g.expires < cutoff]:
                    del grants[value]


def new_code_value() -> str:
    return uuid.uuid4().hex


def new_refresh_value() -> str:
    # authentik: generate_client_secret() == generate_id(128)
    return generate_id(128)

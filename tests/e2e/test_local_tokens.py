"""token_validation: local (the e2e stack's, from the dev example stack): Dovecot
checks authentik's JWTs itself with the keys jwks-sync copies from the JWKS.

Real tokens from the stand-in; refusals each with Dovecot's reason in its log.
Runs before test_webmail.py (file order): the key rotation here leaves the
stand-in signing with its new key, which later tests use as they find it.
"""

from __future__ import annotations

import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.e2e import mailclients
from tests.e2e.environment import AUTH_PORT, AUTH_URL, JWKS_REFRESH_SECONDS, MAIL_DOMAIN, MAIL_HOST, PORTS, Stack
from tests.e2e.mailclients import LoginRefused
from tests.e2e.standin import client as idp
from tests.e2e.test_webmail import imap, new_logs, tokens

pytestmark = pytest.mark.e2e

ALICE, BOB = f"alice@{MAIL_DOMAIN}", f"bob@{MAIL_DOMAIN}"
SYNC_WAIT = 12 * JWKS_REFRESH_SECONDS  # bounded wait for jwks-sync's next rounds


def logs_in(stack: Stack, user: str, token: str) -> bool:
    try:
        imap(stack, user, token).logout()
        return True
    except LoginRefused:
        return False


def eventually(what: str, check, stack: Stack) -> None:
    deadline = time.monotonic() + SYNC_WAIT
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1)
    pytest.fail(f"not within {SYNC_WAIT}s: {what}\n{stack.logs('dovecot')[-3000:]}")


def refused_with(stack: Stack, user: str, token: str, reason: str, smtp: bool = False) -> None:
    """Refused over IMAP (and submission), with Dovecot's reason in its log."""
    before = len(stack.logs("dovecot"))
    with pytest.raises(LoginRefused):
        imap(stack, user, token)
    if smtp:
        with pytest.raises(LoginRefused):
            mailclients.smtp_submit(MAIL_HOST, PORTS["submission"], stack.ca_file, user, token,
                                    mailclients.message(user, BOB, "refused"))
    expected = 2 if smtp else 1  # Postfix asks Dovecot's auth service too
    deadline = time.monotonic() + 10
    while new_logs(stack, "dovecot", before).count(reason) < expected and time.monotonic() < deadline:
        time.sleep(0.3)
    assert new_logs(stack, "dovecot", before).count(reason) >= expected, new_logs(stack, "dovecot", before)[-2000:]


def test_a_login_makes_no_call_to_authentik(stack: Stack) -> None:
    exchange = "token: authorization_code for alice"
    exchanges = stack.logs("authentik").count(exchange)
    token = tokens(stack, ALICE)["access_token"]
    # The stand-in's log line for that code exchange reaches `docker logs` a moment
    # after the answer: wait for it (bounded), so only the logins' calls count.
    deadline = time.monotonic() + 10
    while stack.logs("authentik").count(exchange) == exchanges and time.monotonic() < deadline:
        time.sleep(0.2)
    before = len(stack.logs("authentik"))
    for _ in range(3):
        imap(stack, ALICE, token).logout()
    mailclients.smtp_submit(MAIL_HOST, PORTS["submission"], stack.ca_file, ALICE, token,
                            mailclients.message(ALICE, BOB, "local validation"))
    calls = [line for line in new_logs(stack, "authentik", before).splitlines() if "-> " in line]
    assert all("/jwks/" in line for line in calls), calls  # at most jwks-sync's rounds


def test_a_token_from_another_issuer_of_the_same_authentik_is_refused(stack: Stack) -> None:
    """authentik writes the Host of the token request into `iss`: a token fetched
    under a name the stack does not know carries an issuer Dovecot refuses."""
    token = tokens(stack, ALICE, host=f"elsewhere.example.test:{AUTH_PORT}")["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["iss"].startswith("https://elsewhere.example.test:")
    refused_with(stack, ALICE, token, "is not allowed")


def test_a_token_signed_by_a_key_authentik_does_not_publish_is_refused(stack: Stack) -> None:
    real = jwt.decode(tokens(stack, ALICE)["access_token"], options={"verify_signature": False})
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(real, forger, algorithm="RS256", headers={"kid": "forged-kid"})
    refused_with(stack, ALICE, forged, "RS256 key 'forged-kid' not found")
    # The right kid does not help: the signature is checked with authentik's key.
    kid = jwt.get_unverified_header(tokens(stack, ALICE)["access_token"])["kid"]
    refused_with(stack, ALICE, jwt.encode(real, forger, algorithm="RS256", headers={"kid": kid}), "Bad signature")


def test_a_token_for_another_audience_is_refused(stack: Stack) -> None:
    """The second e2e application (same authentik, same program, token_validation:
    introspection) has its own client id and slug: its tokens carry another
    audience (and issuer). tests/daemons/test_dovecot_local.py refuses each alone."""
    second = stack.introspection_capture.one("authentik:index/providerOauth2:ProviderOauth2").inputs
    other = tokens(stack, ALICE, client_id=second["clientId"], client_secret=second["clientSecret"],
                   redirect_uri=second["allowedRedirectUris"][0]["url"])
    assert jwt.decode(other["access_token"], options={"verify_signature": False})["aud"] == second["clientId"]
    refused_with(stack, ALICE, other["access_token"], "Local validation failed")


def test_a_refresh_token_is_never_a_mail_password(stack: Stack) -> None:
    issued = tokens(stack, ALICE)
    # authentik's introspection would call it active; Dovecot never asks.
    assert idp.introspect(AUTH_URL, issued["refresh_token"], stack.client_id, stack.client_secret,
                          verify=str(stack.ca_file))["active"] is True
    refused_with(stack, ALICE, issued["refresh_token"], "Not a JWT token", smtp=True)


def test_a_key_rotation_at_authentik_is_picked_up_without_restarting_dovecot(stack: Stack) -> None:
    dovecot = stack.deployment.container("dovecot")
    started = dovecot.attrs["State"]["StartedAt"]
    old = tokens(stack, ALICE)["access_token"]
    assert logs_in(stack, ALICE, old)
    new_kid = idp.rotate_signing_key(AUTH_URL, stack.slug, verify=str(stack.ca_file))
    new = tokens(stack, ALICE)["access_token"]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    eventually("a token signed with the new key logs in", lambda: logs_in(stack, ALICE, new), stack)
    # authentik publishes only the new key: tokens of the old one stop working.
    eventually("the old key's token is refused", lambda: not logs_in(stack, ALICE, old), stack)
    assert re.search(rf"jwks-sync: added key {re.escape(new_kid)}", stack.logs("dovecot"))
    assert "jwks-sync: removed key" in stack.logs("dovecot")
    dovecot = stack.deployment.container("dovecot")
    assert (dovecot.status, dovecot.attrs["State"]["StartedAt"]) == ("running", started), "Dovecot was not restarted"
    assert logs_in(stack, BOB, tokens(stack, BOB)["access_token"])

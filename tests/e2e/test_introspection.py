"""token_validation: introspection, as a second, smaller deployment of the same
e2e stack: the program's declarations for it (own application in the stand-in,
own names and ports), of which only Dovecot and its network and volume run.
authentik (the stand-in) decides every login; refresh tokens are refused; an
unreachable authentik fails logins closed, and they recover."""

from __future__ import annotations

import re
import ssl
import socket
from typing import Iterator

import pytest

from tests.e2e import mailclients
from tests.e2e.deploy import Deployment, deploy
from tests.e2e.environment import (
    AUTH_HOST, AUTH_URL, INTROSPECTION_IMAPS_PORT, LOOPBACK, MAIL_DOMAIN, MAIL_HOST, Stack, wait_for,
)
from tests.e2e.mailclients import LoginRefused
from tests.e2e.standin import client as idp

pytestmark = pytest.mark.e2e

ALICE = f"alice@{MAIL_DOMAIN}"
PROVIDER = "authentik:index/providerOauth2:ProviderOauth2"


@pytest.fixture(scope="module")
def introspecting(stack: Stack) -> Iterator[Deployment]:
    declared = stack.introspection_capture
    assert declared is not None
    deployment = deploy(stack.client, declared, stack.build_images(declared), services=("dovecot",))
    network = deployment.networks[0]
    try:
        # authentik (the stand-in) under its name on this deployment's network too.
        network.connect(stack.standin, aliases=[AUTH_HOST])

        def greets() -> bool:
            context = ssl.create_default_context(cafile=str(stack.ca_file))
            with socket.create_connection((LOOPBACK, INTROSPECTION_IMAPS_PORT), timeout=3) as sock:
                with context.wrap_socket(sock, server_hostname=MAIL_HOST) as tls:
                    return tls.recv(200).startswith(b"* OK")

        wait_for(greets, "the introspection stack's Dovecot")
        yield deployment
    finally:
        try:
            network.disconnect(stack.standin)
        finally:
            deployment.remove()


def tokens(stack: Stack, user: str = ALICE) -> dict:
    provider = stack.introspection_capture.one(PROVIDER).inputs
    return idp.login_and_get_tokens(
        AUTH_URL, provider["clientId"], provider["clientSecret"], provider["allowedRedirectUris"][0]["url"],
        user.split("@")[0], "alice-pw", verify=str(stack.ca_file),
    )


def imap(stack: Stack, token: str, mechanism: str = "XOAUTH2"):
    return mailclients.imap_login(MAIL_HOST, INTROSPECTION_IMAPS_PORT, stack.ca_file, ALICE, token, mechanism)


def introspections(stack: Stack) -> int:
    return stack.logs("authentik").count("POST /application/o/introspect/")


def test_each_login_asks_authentik_once(stack: Stack, introspecting: Deployment) -> None:
    token = tokens(stack)["access_token"]
    before = introspections(stack)
    imap(stack, token).logout()
    imap(stack, token, "OAUTHBEARER").logout()
    assert introspections(stack) - before == 2


def test_a_refresh_token_is_refused_before_authentik_is_asked(stack: Stack, introspecting: Deployment) -> None:
    issued = tokens(stack)
    provider = stack.introspection_capture.one(PROVIDER).inputs
    # authentik's introspection reports the refresh token active, as the real one does...
    assert idp.introspect(AUTH_URL, issued["refresh_token"], provider["clientId"], provider["clientSecret"],
                          verify=str(stack.ca_file))["active"] is True
    before_calls, before_log = introspections(stack), len(introspecting.logs("dovecot"))
    # ...so the container's filter never lets one through.
    for mechanism in ("XOAUTH2", "OAUTHBEARER"):
        with pytest.raises(LoginRefused):
            imap(stack, issued["refresh_token"], mechanism)
    assert introspections(stack) == before_calls
    assert introspecting.logs("dovecot")[before_log:].count("not a JWT") == 2


def test_logins_fail_closed_while_authentik_is_unreachable_and_recover(
    stack: Stack, introspecting: Deployment
) -> None:
    token = tokens(stack)["access_token"]
    imap(stack, token).logout()
    before = len(introspecting.logs("dovecot"))
    with stack.authentik_unreachable():
        with pytest.raises(LoginRefused):
            imap(stack, token)
        assert introspecting.container("dovecot").status == "running"
        log = introspecting.logs("dovecot")[before:]
        assert "authentik unreachable" in log and re.search(r"Introspection failed", log), log[-2000:]
    wait_for(lambda: imap(stack, token).logout() is not None, "a login after authentik returned", timeout=30)

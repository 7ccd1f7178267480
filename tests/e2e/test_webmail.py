"""A person logs into Roundcube through authentik, mail goes round, and bad tokens are refused.

The tests run in file order against one deployed stack (see conftest.py);
the browser session opened by the first is used again by later ones.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e import mailclients
from tests.e2e.environment import (
    ACCESS_TOKEN_SECONDS,
    ARTIFACTS,
    AUTH_HOST,
    AUTH_URL,
    MAIL_DOMAIN,
    MAIL_HOST,
    OTHER_CLIENT,
    OTHER_REDIRECT,
    PORTS,
    ROUNDCUBE_URL,
    Stack,
    wait_for,
)
from tests.e2e.mailclients import LoginRefused
from tests.e2e.standin import client as idp

pytestmark = pytest.mark.e2e

ALICE, BOB, CAROL = (f"{u}@{MAIL_DOMAIN}" for u in ("alice", "bob", "carol"))
PASSWORDS = {ALICE: "alice-pw", BOB: "bob-pw", CAROL: "carol-pw"}
CHROMIUM = "/usr/bin/chromium"


def spki_pin(cert_file) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(stack: Stack, pki: dict) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                # authentik's name leads to the published port on loopback...
                f"--host-resolver-rules=MAP {AUTH_HOST} 127.0.0.1",
                # ...and only the stand-in's certificate (signed by the test CA) is accepted.
                f"--ignore-certificate-errors-spki-list={spki_pin(pki['auth_cert'])}",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def tokens(stack: Stack, user: str, **kwargs: Any) -> dict[str, Any]:
    return idp.login_and_get_tokens(
        AUTH_URL,
        kwargs.pop("client_id", stack.client_id),
        kwargs.pop("client_secret", stack.client_secret),
        kwargs.pop("redirect_uri", stack.redirect_uri),
        user.split("@")[0],
        PASSWORDS[user],
        verify=str(stack.ca_file),
        **kwargs,
    )


def imap(stack: Stack, user: str, token: str, mechanism: str = "XOAUTH2"):
    return mailclients.imap_login(MAIL_HOST, PORTS["imaps"], stack.ca_file, user, token, mechanism)


def login_through_authentik(page: Page, user: str) -> None:
    page.goto(ROUNDCUBE_URL + "/")
    page.get_by_role("link", name=re.compile("authentik", re.I)).or_(
        page.get_by_role("button", name=re.compile("authentik", re.I))
    ).first.click()
    page.wait_for_url(re.compile(re.escape(AUTH_URL)))
    page.fill("#uid_field", user.split("@")[0])
    page.fill("#password", PASSWORDS[user])
    page.get_by_role("button", name="Log in").click()


def wait_for_inbox(page: Page) -> None:
    page.wait_for_url(re.compile(r"_task=mail"), timeout=30000)
    page.locator("#mailboxlist li.inbox").wait_for(timeout=30000)


def new_logs(stack: Stack, service: str, since: int) -> str:
    return stack.logs(service)[since:]


@pytest.fixture(scope="module")
def alice_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


# -- the happy path ------------------------------------------------------------------


def test_browser_login_through_authentik_lands_in_the_inbox(stack: Stack, alice_page: Page) -> None:
    before = len(stack.logs("authentik"))
    login_through_authentik(alice_page, ALICE)
    wait_for_inbox(alice_page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    alice_page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)
    assert ALICE in alice_page.content(), "Roundcube shows the logged-in identity"
    standin = new_logs(stack, "authentik", before)
    assert "authorization_code" in standin
    # Dovecot checked the token Roundcube presented itself (token_validation: local).
    assert "introspect" not in standin
    assert "Logged in: user=<alice@" in stack.logs("dovecot")


def test_mail_sent_in_roundcube_arrives_in_the_other_users_mailbox(stack: Stack, alice_page: Page) -> None:
    subject = f"Roundcube round trip {uuid.uuid4().hex[:8]}"
    page = alice_page
    page.goto(ROUNDCUBE_URL + "/?_task=mail&_action=compose")
    # Elastic's recipient widget: a visible input in front of the hidden _to field.
    to = page.locator(".recipient-input input").first
    to.wait_for(timeout=30000)
    to.type(BOB)
    to.press("Enter")
    page.fill("#compose-subject", subject)
    page.fill("#composebody", "Hello Bob, from Roundcube through Postfix and Dovecot.")
    page.locator("button.send").click()
    page.get_by_text("Message sent successfully").wait_for(timeout=30000)

    bob = imap(stack, BOB, tokens(stack, BOB)["access_token"])
    try:
        wait_for(lambda: subject in mailclients.inbox_subjects(bob), "the message in Bob's inbox", timeout=30)
    finally:
        bob.logout()


def test_submission_with_xoauth2_on_587_delivers(stack: Stack) -> None:
    subject = f"Submission {uuid.uuid4().hex[:8]}"
    token = tokens(stack, BOB)["access_token"]
    assert len(token) > 700, "a JWT as long as authentik's travels inline on the AUTH line"
    mailclients.smtp_submit(MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, token, mailclients.message(BOB, ALICE, subject))
    alice = imap(stack, ALICE, tokens(stack, ALICE)["access_token"], mechanism="OAUTHBEARER")
    try:
        wait_for(lambda: subject in mailclients.inbox_subjects(alice), "the message in Alice's inbox", timeout=30)
    finally:
        alice.logout()


def test_a_user_cannot_send_as_another(stack: Stack) -> None:
    token = tokens(stack, BOB)["access_token"]
    with pytest.raises(Exception, match="Sender address rejected|not owned by user"):
        mailclients.smtp_submit(
            MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, token, mailclients.message(ALICE, BOB, "forged")
        )


def test_a_user_outside_the_allowed_group_is_stopped_at_authentik(stack: Stack) -> None:
    with pytest.raises(idp.FlowError):
        tokens(stack, CAROL)


# -- refused, each with its reason in the log --------------------------------------------


def test_a_token_for_one_user_presented_as_another_is_refused(stack: Stack) -> None:
    token = tokens(stack, ALICE)["access_token"]
    before = len(stack.logs("dovecot"))
    with pytest.raises(LoginRefused):
        imap(stack, BOB, token)
    with pytest.raises(LoginRefused):
        mailclients.smtp_submit(
            MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, token, mailclients.message(BOB, ALICE, "x")
        )
    log = new_logs(stack, "dovecot", before)
    assert re.search(r"did not match|Username .* mismatch", log, re.I), log[-2000:]


def test_a_token_issued_to_another_client_is_refused(stack: Stack) -> None:
    other = tokens(stack, ALICE, redirect_uri=OTHER_REDIRECT, scope="openid email offline_access", **OTHER_CLIENT)
    before_dovecot, before_idp = len(stack.logs("dovecot")), len(stack.logs("authentik"))
    with pytest.raises(LoginRefused):
        imap(stack, ALICE, other["access_token"])
    # Its issuer (the other application's), audience and key are not this provider's.
    assert "Local validation failed" in new_logs(stack, "dovecot", before_dovecot)
    assert "introspect" not in new_logs(stack, "authentik", before_idp)


def test_garbage_xoauth2_is_refused(stack: Stack) -> None:
    before = len(stack.logs("dovecot"))
    with pytest.raises(LoginRefused):
        imap(stack, ALICE, "this.is-not.a-token")
    assert "Local validation failed" in new_logs(stack, "dovecot", before)


def test_an_expired_token_is_refused(stack: Stack) -> None:
    token = tokens(stack, ALICE)["access_token"]
    imap(stack, ALICE, token).logout()  # valid while fresh
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 2)
    before_dovecot, before_idp = len(stack.logs("dovecot")), len(stack.logs("authentik"))
    with pytest.raises(LoginRefused):
        imap(stack, ALICE, token)
    assert "Token has expired" in new_logs(stack, "dovecot", before_dovecot)
    assert "introspect" not in new_logs(stack, "authentik", before_idp)


# -- a session outlives its access token ---------------------------------------------------


def test_the_roundcube_session_survives_the_access_tokens_expiry(stack: Stack, alice_page: Page) -> None:
    # No open page, so no keep-alive refreshes in the background; then wait
    # past the expiry of the session's current access token.
    alice_page.goto("about:blank")
    time.sleep(ACCESS_TOKEN_SECONDS + 2)
    before = len(stack.logs("authentik"))
    alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
    wait_for_inbox(alice_page)
    alice_page.locator("#messagelist tbody tr").first.wait_for(timeout=30000)
    log = new_logs(stack, "authentik", before)
    assert re.search(r"token: refresh_token \S+ for alice", log), "Roundcube refreshed the access token"
    # ...without sending the browser back through authentik for a new code.
    assert "token: authorization_code for alice" not in log
    assert "/application/o/authorize/" not in log


def test_twenty_concurrent_requests_at_the_refresh_point_refresh_once_and_keep_the_session(
    stack: Stack, alice_page: Page
) -> None:
    """Roundcube's refresh race (roundcube/roundcubemail#10140), fixed by
    images/roundcube/refresh-lock.patch: one refresh grant, and the session lives."""
    pattern = r"token: refresh_token \S+ for alice"
    count = len(re.findall(pattern, stack.logs("authentik")))

    def roundcube_refreshed() -> bool:
        alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
        return len(re.findall(pattern, stack.logs("authentik"))) > count

    wait_for(roundcube_refreshed, "a token refresh by Roundcube", timeout=60)
    alice_page.goto("about:blank")  # the inbox page's keep-alive would refresh first
    # Roundcube refreshes `refresh_interval + 10` s before expiry (10 + 10 of
    # 30 s here): after 12 s the session's token is at its refresh point.
    time.sleep(12)
    cookies = {c["name"]: c["value"] for c in alice_page.context.cookies() if "localhost" in c["domain"]}
    before = len(stack.logs("authentik"))

    def request(_: int) -> int:
        return requests.get(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX", cookies=cookies, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(request, range(20)))
    assert statuses == [200] * 20, statuses
    log = new_logs(stack, "authentik", before)
    # One token request in all (without the patch: one grant, then invalid_grant for the rest).
    assert log.count("POST /application/o/token/") == 1, log
    assert len(re.findall(pattern, log)) == 1, log
    assert "invalid_grant" not in log, log
    # The session is alive: the inbox, not the login page.
    alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
    wait_for_inbox(alice_page)


# -- the identity provider goes away and comes back ----------------------------------------------


def test_local_logins_and_roundcube_keep_working_while_authentik_is_unreachable(stack: Stack, alice_page: Page) -> None:
    """token_validation: local needs authentik only to issue tokens and publish keys.

    (tests/e2e/test_introspection.py: the introspection stack fails closed instead.)
    Roundcube refreshes its token a third of the lifetime after issue; the outage
    starts right after such a refresh, so Roundcube has no reason to call authentik.
    """
    token = tokens(stack, ALICE)["access_token"]
    refreshed = len(re.findall(r"token: refresh_token \S+ for alice", stack.logs("authentik")))

    def roundcube_refreshed() -> bool:
        alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
        return len(re.findall(r"token: refresh_token \S+ for alice", stack.logs("authentik"))) > refreshed

    wait_for(roundcube_refreshed, "Roundcube's next token refresh", timeout=60)
    before = len(stack.logs("dovecot"))
    with stack.authentik_unreachable():
        imap(stack, ALICE, token).logout()
        # Roundcube's session goes on: inbox, message list, each a new IMAP login.
        alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
        wait_for_inbox(alice_page)
        alice_page.locator("#messagelist tbody tr").first.wait_for(timeout=30000)
        log = new_logs(stack, "dovecot", before)
        assert log.count("Logged in: user=<alice@") >= 2, log[-2000:]
        assert "oauth2 failed" not in log, log[-2000:]
    # Back: the keys were kept through the failed fetches, nothing to recover.
    imap(stack, ALICE, tokens(stack, ALICE)["access_token"]).logout()


# -- what the logs hold ----------------------------------------------------------------------


def test_no_credential_reaches_any_log(stack: Stack) -> None:
    # Runs after every flow above: logins, sends, refreshes, refusals, outage.
    uploads = stack.capture.one("docker:index/container:Container", "-roundcube").inputs["uploads"]
    config = next(u["content"] for u in uploads if u["file"] == "/etc/roundcube/config.inc.php")
    des_key = config.split('"des_key": "', 1)[1].split('"', 1)[0]
    forbidden = {
        "client secret": re.escape(stack.client_secret),
        "DES key": re.escape(des_key),
        "a JWT (access or id token)": r"eyJ[A-Za-z0-9_-]{10,}\.eyJ",
        "an authorization code": r"[?&]code=[0-9a-f]{16,}",
        "a user's password": "|".join(re.escape(p) for p in PASSWORDS.values()),
        "a bearer token": r"Bearer [A-Za-z0-9_.-]{20,}",
    }
    for service in ("dovecot", "postfix", "roundcube", "authentik"):
        log = stack.logs(service)
        assert len(log) > 500, f"{service} logged its work"
        for what, pattern in forbidden.items():
            assert not re.search(pattern, log), f"{service}'s log holds {what}"


# -- a redirect URI that is not Roundcube's ------------------------------------------------------


def test_a_provider_registered_with_the_guides_old_redirect_uri_stops_at_authentiks_error_page(
    stack: Stack, browser: Browser
) -> None:
    outdated = stack.redirect_uri.replace("/index.php/login/oauth", "/?_task=settings&_action=plugin.oauth_redirect")
    config = {**stack.standin_config}
    app = {**config["applications"][0]}
    app["provider"] = {**app["provider"], "allowed_redirect_uris": [{"matching_mode": "strict", "url": outdated}]}
    config["applications"] = [app, *config["applications"][1:]]
    stack.restart_standin(config)
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(ROUNDCUBE_URL + "/")
        page.get_by_role("link", name=re.compile("authentik", re.I)).or_(
            page.get_by_role("button", name=re.compile("authentik", re.I))
        ).first.click()
        page.get_by_text("Redirect URI Error").wait_for(timeout=15000)
        page.screenshot(path=str(ARTIFACTS / "redirect-uri-error.png"))
        context.close()
        assert re.search(r"redirect", stack.logs("authentik"), re.I)
    finally:
        stack.restart_standin(stack.standin_config)

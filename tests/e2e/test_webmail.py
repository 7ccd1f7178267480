"""A person logs into Roundcube through authentik, mail goes round, and bad tokens are refused.

The tests run in file order against one deployed stack (see conftest.py);
the browser session opened by the first is used again by later ones.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import ssl
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import dkim
import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.e2e import mailclients
from components.render.roundcube import extract_json_document
from offline.capture import PROJECT_DIR, capture
from tests.e2e.deploy import redeploy
from tests.e2e.environment import (
    ARTIFACTS,
    AUTH_HOST,
    MAIN,
    Layout,
    AUTH_URL,
    MAIL_DOMAIN,
    MAIL_HOST,
    OTHER_CLIENT,
    OTHER_REDIRECT,
    PORTS,
    ROUNDCUBE_URL,
    Stack,
    Override,
    banner,
    e2e_config,
    standin_config_for,
    wait_for,
)
from tests.e2e.mailclients import LoginRefused
from tests.e2e.standin import client as idp

pytestmark = pytest.mark.e2e

ALICE, BOB, CAROL = (f"{u}@{MAIL_DOMAIN}" for u in ("alice", "bob", "carol"))
DAVE = "dave@elsewhere.example"  # allowed by authentik, email outside the mail domain
PASSWORDS = {ALICE: "alice-pw", BOB: "bob-pw", CAROL: "carol-pw", DAVE: "dave-pw"}
CHROMIUM = "/usr/bin/chromium"


def spki_pin(cert_file) -> str:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(stack: Stack, pki: dict) -> Iterator[Browser]:
    with chromium(pki) as browser:
        yield browser


@contextlib.contextmanager
def chromium(pki: dict) -> Iterator[Browser]:
    """Debian's Chromium, headless, that reaches authentik's name on loopback and trusts only the stand-in."""
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
        stack.where.auth_url,
        kwargs.pop("client_id", stack.client_id),
        kwargs.pop("client_secret", stack.client_secret),
        kwargs.pop("redirect_uri", stack.redirect_uri),
        user.split("@")[0],
        PASSWORDS[user],
        verify=str(stack.ca_file),
        **kwargs,
    )


def imap(stack: Stack, user: str, token: str, mechanism: str = "XOAUTH2"):
    return mailclients.imap_login(MAIL_HOST, stack.where.ports["imaps"], stack.ca_file, user, token, mechanism)


def login_through_authentik(page: Page, user: str, where: Layout = MAIN) -> None:
    page.goto(where.roundcube_url + "/")
    page.get_by_role("link", name=re.compile("authentik", re.I)).or_(
        page.get_by_role("button", name=re.compile("authentik", re.I))
    ).first.click()
    page.wait_for_url(re.compile(re.escape(where.auth_url)))
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


def send_in_roundcube(page: Page, recipient: str, subject: str, body: str, where: Layout = MAIN) -> None:
    page.goto(where.roundcube_url + "/?_task=mail&_action=compose")
    # Elastic's recipient widget: a visible input in front of the hidden _to field.
    to = page.locator(".recipient-input input").first
    try:
        to.wait_for(timeout=30000)
    except PlaywrightTimeoutError:
        raise AssertionError(_page_report(page, "no compose form")) from None
    to.type(recipient)
    to.press("Enter")
    page.fill("#compose-subject", subject)
    page.fill("#composebody", body)
    page.locator("button.send").click()
    # One click, as a user sends: any error Roundcube shows fails the test.
    sent, failed = page.get_by_text("Message sent successfully"), page.locator(".messagestack .error")
    try:
        sent.or_(failed).first.wait_for(timeout=30000)
    except PlaywrightTimeoutError:
        raise AssertionError(_page_report(page, "no answer to Send")) from None
    if not sent.count():
        raise AssertionError(_page_report(page, "Roundcube reported an error on Send"))
    # Half a second after "sent", Roundcube's script leaves the compose page for the
    # mailbox list (app.js, sent_successfully). A navigation started before that fires
    # is cancelled by it (net::ERR_ABORTED), so the next step starts where a user would:
    # back at the list.
    try:
        page.wait_for_url(lambda url: "_action=compose" not in url, timeout=30000)
    except PlaywrightTimeoutError:
        raise AssertionError(_page_report(page, "no return to the mailbox list after Send")) from None


def _page_report(page: Page, what: str) -> str:
    """What the page showed instead, for the failure report; a screenshot goes to artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"page-{uuid.uuid4().hex[:8]}.png"
    page.screenshot(path=str(shot), full_page=True)
    return f"{what} at {page.url} (screenshot {shot}): {page.locator('body').inner_text()[:500]!r}"


def test_mail_sent_in_roundcube_arrives_in_the_other_users_mailbox(stack: Stack, alice_page: Page) -> None:
    subject = f"Roundcube round trip {uuid.uuid4().hex[:8]}"
    send_in_roundcube(alice_page, BOB, subject, "Hello Bob, from Roundcube through Postfix and Dovecot.")

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


def _auth_processes(stack: Stack) -> set[str]:
    script = 'for p in /proc/[0-9]*; do case "$(tr "\\0" " " < $p/cmdline 2>/dev/null)" in "dovecot/auth"*) echo ${p#/proc/};; esac; done'
    return set(stack.deployment.container("dovecot").exec_run(["sh", "-c", script]).output.decode().split())


def test_sending_in_roundcube_works_right_after_dovecot_reloads_and_restarts(stack: Stack, alice_page: Page) -> None:
    """Postfix's smtpd processes stay connected to Dovecot's auth service across
    sessions; a reload (the JWKS sync reloads after a key change) or a restart
    ends that connection, and the next send must still succeed at once."""
    dovecot = stack.deployment.container("dovecot")
    send_in_roundcube(alice_page, BOB, f"Before the reload {uuid.uuid4().hex[:8]}", "Opens Postfix's auth connection.")
    old = _auth_processes(stack)
    assert dovecot.exec_run(["doveadm", "reload"]).exit_code == 0
    wait_for(lambda: not (_auth_processes(stack) & old), "Dovecot's old auth process to end", timeout=60)
    subject = f"After the reload {uuid.uuid4().hex[:8]}"
    send_in_roundcube(alice_page, BOB, subject, "Sent right after Dovecot reloaded.")

    dovecot.restart(timeout=10)
    imaps = ssl.create_default_context(cafile=str(stack.ca_file))
    wait_for(lambda: banner(PORTS["imaps"], imaps), "Dovecot after its restart")
    restarted = f"After the restart {uuid.uuid4().hex[:8]}"
    send_in_roundcube(alice_page, BOB, restarted, "Sent right after Dovecot restarted.")
    bob = imap(stack, BOB, tokens(stack, BOB)["access_token"])
    try:
        wait_for(lambda: {subject, restarted} <= set(mailclients.inbox_subjects(bob)), "both in Bob's inbox", timeout=30)
    finally:
        bob.logout()


def test_one_clients_failed_logins_delay_nobody_else(stack: Stack, alice_page: Page) -> None:
    """A burst of bad tokens from one address (the test's, as published ports
    see every local client), then good logins from the same address and
    through Roundcube: each succeeds at once, none is refused."""
    for _ in range(5):
        with pytest.raises(LoginRefused):
            imap(stack, ALICE, "not-a-token")
    subject = f"After a burst of bad logins {uuid.uuid4().hex[:8]}"
    # Postfix waits 10 s for Dovecot: a penalty of 15 s made this a 454.
    mailclients.smtp_submit(MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, tokens(stack, BOB)["access_token"],
                            mailclients.message(BOB, ALICE, subject))
    send_in_roundcube(alice_page, BOB, f"Roundcube after a burst {uuid.uuid4().hex[:8]}", "Still at once.")
    penalties = stack.deployment.container("dovecot").exec_run(["doveadm", "penalty"]).output.decode()
    assert penalties.strip().splitlines()[1:] == [], penalties


# -- mail the internet accepts: DKIM ------------------------------------------------------

FRIEND = "friend@elsewhere.example"  # another domain: Postfix hands it to the relay host


def relayed_message(stack: Stack, subject: str) -> tuple[dict[str, Any], bytes]:
    found: list[tuple[dict[str, Any], bytes]] = []

    def arrived() -> bool:
        found[:] = [(e, raw) for e, raw in stack.relayed() if f"Subject: {subject}".encode() in raw]
        return bool(found)

    wait_for(arrived, f"the message {subject!r} at the receiving SMTP server", timeout=30)
    return found[0]


def dns_txt(stack: Stack):
    """dkimpy's DNS hook answering from the stack output dns_records (no resolver involved)."""
    records = {r["name"]: r["value"] for r in stack.capture.exports["dns_records"] if r["type"] == "TXT"}

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip("."), "").encode()

    return lookup


def assert_signed_and_verifiable(stack: Stack, raw: bytes, body_word: bytes) -> None:
    signature = [line for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line.startswith(b"DKIM-Signature:")]
    assert len(signature) == 1, raw[:2000]
    assert f"d={MAIL_DOMAIN};".encode() in raw and b"s=s202612;" in raw
    assert dkim.verify(raw, dnsfunc=dns_txt(stack)), raw.decode(errors="replace")
    head, body = raw.split(b"\r\n\r\n", 1)
    assert body_word in body
    assert not dkim.verify(head + b"\r\n\r\n" + body.replace(body_word, body_word.upper()), dnsfunc=dns_txt(stack))


def test_mail_sent_in_roundcube_to_another_domain_leaves_dkim_signed(stack: Stack, browser: Browser) -> None:
    # Bob's own browser session: Alice's session keeps the request pattern the
    # token-lifetime tests below expect (see the README's refresh race).
    context = browser.new_context()
    try:
        page = context.new_page()
        login_through_authentik(page, BOB)
        wait_for_inbox(page)
        subject = f"Roundcube to the internet {uuid.uuid4().hex[:8]}"
        send_in_roundcube(page, FRIEND, subject, "Hello friend, this leaves signed.")
    finally:
        context.close()
    envelope, raw = relayed_message(stack, subject)
    assert envelope["mail_from"] == BOB and envelope["rcpt_tos"] == [FRIEND]
    assert_signed_and_verifiable(stack, raw, b"friend")


def test_mail_sent_through_submission_to_another_domain_leaves_dkim_signed(stack: Stack) -> None:
    subject = f"Submission to the internet {uuid.uuid4().hex[:8]}"
    token = tokens(stack, BOB)["access_token"]
    mailclients.smtp_submit(
        MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, token,
        mailclients.message(BOB, FRIEND, subject, body="Hello friend, from a mail client."),
    )
    envelope, raw = relayed_message(stack, subject)
    assert envelope["mail_from"] == BOB and envelope["rcpt_tos"] == [FRIEND]
    assert_signed_and_verifiable(stack, raw, b"friend")


def test_every_container_resolves_names_through_the_test_zone_only(stack: Stack) -> None:
    [dns] = [c for c in stack.deployment.test_services if c.name.endswith("-test-dns")]
    address = dns.attrs["NetworkSettings"]["Networks"][stack.deployment.networks[0].name]["IPAddress"]
    for name in stack.deployment.containers:
        container = stack.deployment.containers[name]
        container.reload()
        assert container.attrs["HostConfig"]["Dns"] == [address], name


def test_a_user_cannot_send_as_another(stack: Stack) -> None:
    token = tokens(stack, BOB)["access_token"]
    with pytest.raises(Exception, match="Sender address rejected|not owned by user"):
        mailclients.smtp_submit(
            MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, token, mailclients.message(ALICE, BOB, "forged")
        )


def test_a_user_outside_the_allowed_group_is_stopped_at_authentik(stack: Stack) -> None:
    # The stand-in enforces the binding the program declares for allowed_group.
    binding = stack.capture.one("authentik:index/policyBinding:PolicyBinding").inputs
    assert binding["target"] == stack.capture.one("authentik:index/application:Application").outputs["uuid"]
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


def test_a_token_whose_email_is_outside_the_mail_domain_is_refused_at_imap_and_submission(stack: Stack) -> None:
    token = tokens(stack, DAVE)["access_token"]
    before = len(stack.logs("dovecot"))
    with pytest.raises(LoginRefused):
        imap(stack, DAVE, token)
    with pytest.raises(LoginRefused):
        mailclients.smtp_submit(
            MAIL_HOST, PORTS["submission"], stack.ca_file, DAVE, token, mailclients.message(DAVE, ALICE, "x")
        )
    assert "deny passdb" in new_logs(stack, "dovecot", before)
    # The domain's users are unaffected.
    imap(stack, ALICE, tokens(stack, ALICE)["access_token"]).logout()


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


def test_after_the_access_tokens_expiry_imap_refuses_it_and_the_roundcube_session_refreshes(
    stack: Stack, alice_page: Page
) -> None:
    # One wait past an expiry serves both sides: a mail client's token and Roundcube's session.
    token = tokens(stack, ALICE)["access_token"]
    imap(stack, ALICE, token).logout()  # valid while fresh
    # No open page, so no keep-alive refreshes in the background. The session's
    # current token is older than `token`, so it expires first.
    alice_page.goto("about:blank")
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 2)

    # The expired token is refused by Dovecot itself.
    before_dovecot, before_idp = len(stack.logs("dovecot")), len(stack.logs("authentik"))
    with pytest.raises(LoginRefused):
        imap(stack, ALICE, token)
    assert "Token has expired" in new_logs(stack, "dovecot", before_dovecot)
    assert "introspect" not in new_logs(stack, "authentik", before_idp)

    # Roundcube's session carries on with a refreshed token...
    before = len(stack.logs("authentik"))
    alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
    wait_for_inbox(alice_page)
    alice_page.locator("#messagelist tbody tr").first.wait_for(timeout=30000)
    refreshed = rf"token: refresh_token \S+ for alice \(client {re.escape(stack.client_id)}\)"
    assert re.search(refreshed, stack.logs("authentik")), "Roundcube refreshed the access token"
    # ...without sending the browser back through authentik for a new code.
    log = new_logs(stack, "authentik", before)
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


def test_a_compose_opened_while_other_requests_of_the_session_run_is_kept(stack: Stack, alice_page: Page) -> None:
    """Roundcube's requests of one session overlap (the page's list and mail checks
    run while the user clicks); each wrote back the session it had read at its
    start, so a compose session stored meanwhile was lost: "Requested compose
    session not found". images/roundcube/session-merge.patch applies each
    request's own changes to the session as stored."""
    alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
    wait_for_inbox(alice_page)
    token = alice_page.evaluate("rcmail.env.request_token")
    cookies = {c["name"]: c["value"] for c in alice_page.context.cookies() if "localhost" in c["domain"]}
    alice_page.goto("about:blank")  # only this test's requests from now on
    ajax = {"X-Roundcube-Request": token, "X-Requested-With": "XMLHttpRequest"}

    def message_list(i: int) -> int:
        # A search of every folder's text stores its result in the session: a
        # request that takes a while and writes the session when it ends.
        return requests.get(ROUNDCUBE_URL + f"/?_task=mail&_action=search&_q=word{i}&_headers=text&_scope=all"
                            "&_mbox=INBOX&_remote=1", cookies=cookies, headers=ajax, timeout=60).status_code

    def compose(_: int) -> str:
        opened = requests.get(ROUNDCUBE_URL + "/?_task=mail&_action=compose", cookies=cookies, timeout=60,
                              allow_redirects=False)
        assert opened.status_code == 302, opened.status_code
        return requests.get(ROUNDCUBE_URL + opened.headers["Location"].removeprefix(ROUNDCUBE_URL), cookies=cookies,
                            timeout=60).text

    lost, rounds = 0, 30
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(rounds):
            opening = pool.submit(compose, 0)
            time.sleep(0.01)  # the searches read the session while Compose is being opened
            lists = [pool.submit(message_list, i) for i in range(7)]
            page = opening.result()
            assert all(f.result() == 200 for f in lists)
            lost += "compose session not found" in page.lower()
    assert lost == 0, f"{lost} of {rounds} compose sessions lost to a concurrent request"
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


def _container_settings(stack: Stack, service: str) -> str:
    """What `docker inspect` shows of a container's environment, command and labels."""
    attrs = stack.deployment.container(service).attrs
    config = attrs["Config"]
    return json.dumps([config.get("Env"), config.get("Cmd"), config.get("Entrypoint"), config.get("Labels"),
                       attrs.get("Path"), attrs.get("Args")])


def test_no_issued_credential_or_secret_reaches_any_log_or_container_setting(stack: Stack) -> None:
    # Runs after every flow above: logins, sends, refreshes, refusals, outage.
    issued = stack.issued()
    kinds = {entry["kind"] for entry in issued}
    assert {"authorization_code", "access_token", "refresh_token", "id_token"} <= kinds, kinds
    config = stack.capture.uploads("roundcube")["/etc/roundcube/config.inc.php"]["content"]
    exact = {f"{entry['kind']} {entry['value'][:12]}...": entry["value"] for entry in issued}
    exact["the client secret"] = stack.client_secret
    exact["Roundcube's DES key"] = extract_json_document(config)["des_key"]
    patterns = {
        "a user's password": "|".join(re.escape(p) for p in PASSWORDS.values()),
        "a JWT (access or id token)": r"eyJ[A-Za-z0-9_-]{10,}\.eyJ",
        "a bearer token": r"Bearer [A-Za-z0-9_.-]{20,}",
    }
    # The DKIM key's last base64 line encodes its CRT coefficient: private material only.
    dkim_key = stack.capture.one("tls:index/privateKey:PrivateKey").outputs["privateKeyPem"].strip().splitlines()
    exact["the DKIM private key"] = dkim_key[-2]
    patterns["a PEM private key"] = "PRIVATE KEY"
    for service in ("dovecot", "postfix", "roundcube", "opendkim"):
        log = stack.logs(service)
        assert len(log) > 500, f"{service} logged its work"
        for where, text in (("log", log), ("docker inspect", _container_settings(stack, service))):
            for what, value in exact.items():
                assert value not in text, f"{service}'s {where} holds {what}"
            for what, pattern in patterns.items():
                assert not re.search(pattern, text), f"{service}'s {where} holds {what}"


# -- data survives an update that replaces every container --------------------------------------


def roundcube_contacts(stack: Stack) -> str:
    result = stack.deployment.container("roundcube").exec_run(
        ["sqlite3", "/var/lib/roundcube/db/roundcube.sqlite", "SELECT email FROM contacts WHERE del = 0"]
    )
    assert result.exit_code == 0, result.output
    return result.output.decode()


def test_the_dkim_signer_passes_its_docker_healthcheck(stack: Stack) -> None:
    opendkim = stack.deployment.container("opendkim")

    def healthy() -> bool:
        opendkim.reload()
        return opendkim.attrs["State"]["Health"]["Status"] == "healthy"

    # Here, before the redeploy replaces OpenDKIM: its first check ran one
    # interval (30 s) after the start, long ago by now.
    wait_for(healthy, "OpenDKIM's healthcheck", timeout=90)


def test_mail_and_contacts_survive_a_redeploy_that_replaces_every_container(stack: Stack, alice_page: Page, pki: dict) -> None:
    # Mail delivered to Alice's mailbox...
    subject = f"Kept {uuid.uuid4().hex[:8]}"
    mailclients.smtp_submit(
        MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, tokens(stack, BOB)["access_token"],
        mailclients.message(BOB, ALICE, subject),
    )
    alice = imap(stack, ALICE, tokens(stack, ALICE)["access_token"])
    try:
        wait_for(lambda: subject in mailclients.inbox_subjects(alice), "the message in Alice's inbox", timeout=30)
    finally:
        alice.logout()
    # ...and a contact saved in Roundcube's address book.
    contact = f"kept-{uuid.uuid4().hex[:8]}@example.org"
    alice_page.goto(ROUNDCUBE_URL + "/?_task=addressbook&_action=add&_source=0&_framed=1")
    alice_page.locator("input[name=_firstname]").fill("Kept")
    alice_page.locator("input[name=_surname]").fill("Contact")
    alice_page.locator("input[name^=_email]").first.fill(contact)
    alice_page.evaluate("rcmail.command('save')")
    wait_for(lambda: contact in roundcube_contacts(stack), "the contact in Roundcube's database", timeout=30)

    # An update whose settings replace Dovecot, Postfix and Roundcube.
    config = e2e_config(stack.where, pki, extra={
        "memory_mb": Override({"dovecot": 640, "postfix": 320, "roundcube": 640, "opendkim": 192, "directory": 320},
                              "replaces every container"),
        "mailbox_quota": Override("6G", "changes Dovecot's config and the directory sync's default quota"),
    })
    later = capture(stack.capture.stack, config, placeholders=False, earlier=stack.capture)
    before_ids = {name: c.id for name, c in stack.deployment.containers.items()}
    volumes_before = sorted(v.name for v in stack.deployment.volumes)
    replaced = redeploy(stack.deployment, stack.capture, later, stack.build_images(later))
    stack.capture = later
    # Every daemon (a new memory limit), and the carriers of Dovecot's and the
    # directory sync's changed config; the other carriers' files are the same, so they stay.
    daemons = [n for n in before_ids if not n.endswith("-config")]
    assert sorted(replaced) == sorted([*daemons, "mail-dovecot-config", "mail-directory-config"]), \
        "every daemon, Dovecot's and the directory sync's config"
    assert all(stack.deployment.containers[n].id != before_ids[n] for n in replaced)
    assert stack.deployment.containers["mail-postfix-config"].id == before_ids["mail-postfix-config"]
    assert sorted(v.name for v in stack.client.volumes.list() if v.name in volumes_before) == volumes_before
    for service in ("dovecot", "postfix", "roundcube"):
        stack.deployment.container(service).reload()
        assert stack.deployment.container(service).attrs["HostConfig"]["Memory"] in (640 << 20, 320 << 20)
    wait_for(lambda: requests.get(ROUNDCUBE_URL, timeout=3).status_code == 200, "Roundcube after the update")

    # Both are still there.
    assert contact in roundcube_contacts(stack)
    def alice_sees_it() -> bool:
        session = imap(stack, ALICE, tokens(stack, ALICE)["access_token"])
        try:
            return subject in mailclients.inbox_subjects(session)
        finally:
            session.logout()
    wait_for(alice_sees_it, "the kept message in Alice's inbox after the update", timeout=60)


# -- a redirect URI that is not Roundcube's ------------------------------------------------------


OLD_GUIDE_CALLBACK = "/?_task=settings&_action=plugin.oauth_redirect"


def test_a_provider_registered_with_the_guides_old_redirect_uri_stops_at_authentiks_error_page(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    # The program as the old guide would have it: a copy whose provider registers
    # the outdated callback. Deployed over the same stack, it keeps the stack's
    # generated credentials (pulumi keeps random resources in state).
    copy = tmp_path / "program-with-the-guides-callback"
    copy.mkdir()
    for part in ("__main__.py", "Pulumi.yaml", "components", "stacks"):
        source = PROJECT_DIR / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, copy / part)
    settings_py = copy / "components" / "settings" / "stack.py"
    real = 'return f"{self.roundcube_url}/index.php/login/oauth"'
    assert real in settings_py.read_text()
    settings_py.write_text(settings_py.read_text().replace(real, f'return f"{{self.roundcube_url}}{OLD_GUIDE_CALLBACK}"'))
    guide = capture(stack.where.stack, stack.config, project_dir=copy, placeholders=False, earlier=stack.capture)
    registered = guide.one("authentik:index/providerOauth2:ProviderOauth2").inputs
    assert registered["allowedRedirectUris"] == [{"matching_mode": "strict", "url": ROUNDCUBE_URL + OLD_GUIDE_CALLBACK}]
    assert registered["clientId"] == stack.client_id

    stack.restart_standin(standin_config_for(guide, stack.where))
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

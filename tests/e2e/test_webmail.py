"""A person logs into Roundcube through authentik, mail goes round, and bad tokens are refused.

The tests run in file order against one deployed stack (see conftest.py);
the browser session opened by the first is used again by later ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e import mailclients
from components.render.roundcube import extract_json_document
from offline.capture import PROJECT_DIR, capture
from tests.e2e.deploy import build_images, redeploy
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
    login_through_authentik(alice_page, ALICE)
    wait_for_inbox(alice_page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    alice_page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)
    assert ALICE in alice_page.content(), "Roundcube shows the logged-in identity"
    standin = stack.logs("authentik")
    assert "authorization_code" in standin
    # Dovecot asked authentik about the very token Roundcube presented.
    assert "introspect" in standin


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
    # The domain's users are unaffected (this also ends Dovecot's delay after failures).
    imap(stack, ALICE, tokens(stack, ALICE)["access_token"]).logout()


def test_a_token_issued_to_another_client_is_refused(stack: Stack) -> None:
    other = tokens(stack, ALICE, redirect_uri=OTHER_REDIRECT, scope="openid email offline_access", **OTHER_CLIENT)
    before_dovecot, before_idp = len(stack.logs("dovecot")), len(stack.logs("authentik"))
    with pytest.raises(LoginRefused):
        imap(stack, ALICE, other["access_token"])
    assert re.search(r"not valid|invalid", new_logs(stack, "dovecot", before_dovecot), re.I)
    assert re.search(r"another provider|other provider", new_logs(stack, "authentik", before_idp), re.I)


def test_garbage_xoauth2_is_refused(stack: Stack) -> None:
    before = len(stack.logs("dovecot"))
    with pytest.raises(LoginRefused):
        imap(stack, ALICE, "this.is-not.a-token")
    assert re.search(r"not valid|invalid", new_logs(stack, "dovecot", before), re.I)


def test_an_expired_token_is_refused(stack: Stack) -> None:
    token = tokens(stack, ALICE)["access_token"]
    imap(stack, ALICE, token).logout()  # valid while fresh
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 2)
    before_dovecot, before_idp = len(stack.logs("dovecot")), len(stack.logs("authentik"))
    with pytest.raises(LoginRefused):
        imap(stack, ALICE, token)
    assert re.search(r"not valid|invalid", new_logs(stack, "dovecot", before_dovecot), re.I)
    assert re.search(r"expired", new_logs(stack, "authentik", before_idp), re.I)


# -- a session outlives its access token ---------------------------------------------------


def test_the_roundcube_session_survives_the_access_tokens_expiry(stack: Stack, alice_page: Page) -> None:
    # The browser session began at the first test; its first access token
    # (ACCESS_TOKEN_SECONDS) has long expired by now.
    # The page's own keep-alive may refresh at any time, before or during
    # this test: look at the whole session for the refresh grants.
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


# -- the identity provider goes away and comes back ----------------------------------------------


def test_logins_fail_closed_while_authentik_is_unreachable_and_recover(stack: Stack, alice_page: Page) -> None:
    token = tokens(stack, ALICE)["access_token"]
    before = len(stack.logs("dovecot"))
    with stack.authentik_unreachable():
        started = time.monotonic()
        with pytest.raises(LoginRefused):
            imap(stack, ALICE, token)
        assert time.monotonic() - started < 15, "a login fails within Dovecot's request timeout"
        # Roundcube's session can't open IMAP either: it answers, it doesn't crash.
        response = alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
        assert response is not None and response.status < 500
        for service in ("dovecot", "postfix", "roundcube"):
            assert stack.deployment.container(service).status == "running", f"{service} kept running"
        log = new_logs(stack, "dovecot", before)
        assert re.search(r"Introspection failed: connect\(.*\) failed: Connection refused", log), log[-2000:]
    # A fresh token: the one above may have outlived its short lifetime by now.
    wait_for(
        lambda: imap(stack, ALICE, tokens(stack, ALICE)["access_token"]).logout() is not None,
        "a login after authentik returned",
        timeout=30,
    )
    # And Roundcube's session works again, with no new login at authentik.
    alice_page.goto(ROUNDCUBE_URL + "/?_task=mail&_mbox=INBOX")
    wait_for_inbox(alice_page)


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
    uploads = stack.capture.one("docker:index/container:Container", "-roundcube").inputs["uploads"]
    config = next(u["content"] for u in uploads if u["file"] == "/etc/roundcube/config.inc.php")
    exact = {f"{entry['kind']} {entry['value'][:12]}...": entry["value"] for entry in issued}
    exact["the client secret"] = stack.client_secret
    exact["Roundcube's DES key"] = extract_json_document(config)["des_key"]
    patterns = {
        "a user's password": "|".join(re.escape(p) for p in PASSWORDS.values()),
        "a JWT (access or id token)": r"eyJ[A-Za-z0-9_-]{10,}\.eyJ",
        "a bearer token": r"Bearer [A-Za-z0-9_.-]{20,}",
    }
    for service in ("dovecot", "postfix", "roundcube"):
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
        "memory_mb": Override({"dovecot": 640, "postfix": 320, "roundcube": 640}, "replaces every container"),
        "mailbox_quota": Override("6G", "changes Dovecot's config"),
    })
    later = capture(stack.capture.stack, config, placeholders=False, earlier=stack.capture)
    before_ids = {name: c.id for name, c in stack.deployment.containers.items()}
    volumes_before = sorted(v.name for v in stack.deployment.volumes)
    # Built as the stack fixture built them: the stand-in's CA in each system
    # store (the e2e stack has no authentik_ca_file), or Dovecot and Roundcube
    # stop trusting the stand-in after the update.
    images = build_images(stack.client, later, trusted_ca=pki["ca"])
    replaced = redeploy(stack.deployment, stack.capture, later, images)
    stack.capture = later
    assert sorted(replaced) == sorted(before_ids), "every container is replaced"
    assert all(stack.deployment.containers[n].id != before_ids[n] for n in before_ids)
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
    settings_py = copy / "components" / "settings.py"
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

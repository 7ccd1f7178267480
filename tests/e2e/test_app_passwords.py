"""Thunderbird and phones: a mail client that knows only an address and an
authentik app password finds the servers (autoconfig), reads over IMAPS and
sends with submission after STARTTLS, against the deployed Dovecot and
Postfix over TLS from the test CA. The stand-in's token endpoint checks app
passwords as authentik does (tests/e2e/standin/server.py)."""

from __future__ import annotations

import imaplib
import plistlib
import secrets
import smtplib
import ssl
import time
import uuid
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
import pytest
import requests

from tests.e2e import mailclients
from tests.e2e.environment import APP_PASSWORD_CACHE_SECONDS, MAIL_DOMAIN, MAIL_HOST, PORTS, ROUNDCUBE_URL, Stack, wait_for
from tests.e2e.standin import client as idp
from tests.e2e.test_webmail import _auth_processes

pytestmark = pytest.mark.e2e

ALICE, BOB, CAROL, FRANK = (f"{u}@{MAIL_DOMAIN}" for u in ("alice", "bob", "carol", "frank"))


@dataclass
class Servers:
    """What Thunderbird learns from the autoconfig file."""

    imap_host: str
    imap_port: int
    imap_socket: str
    smtp_host: str
    smtp_port: int
    smtp_socket: str


def discover(address: str) -> Servers:
    """Thunderbird's lookup: <domain>/.well-known/autoconfig/mail/config-v1.1.xml (here: Roundcube's site)."""
    answer = requests.get(f"{ROUNDCUBE_URL}/.well-known/autoconfig/mail/config-v1.1.xml",
                          params={"emailaddress": address}, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/xml"), answer.headers
    provider = ElementTree.fromstring(answer.content).find("emailProvider")
    assert provider is not None and provider.findtext("domain") == MAIL_DOMAIN
    incoming, outgoing = provider.find("incomingServer"), provider.find("outgoingServer")
    assert incoming is not None and outgoing is not None
    for server in (incoming, outgoing):
        assert server.findtext("username") == "%EMAILADDRESS%"
        assert server.findtext("authentication") == "password-cleartext"
    return Servers(incoming.findtext("hostname") or "", int(incoming.findtext("port") or 0),
                   incoming.findtext("socketType") or "", outgoing.findtext("hostname") or "",
                   int(outgoing.findtext("port") or 0), outgoing.findtext("socketType") or "")


def tls(stack: Stack) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(stack.ca_file))


def imap_login(stack: Stack, servers: Servers, address: str, password: str) -> imaplib.IMAP4_SSL:
    assert servers.imap_socket == "SSL"
    client = imaplib.IMAP4_SSL(servers.imap_host, servers.imap_port, ssl_context=tls(stack), timeout=30)
    assert "AUTH=PLAIN" in client.capabilities, client.capabilities
    try:
        client.login(address, password)
    except imaplib.IMAP4.error as err:
        client.shutdown()
        raise mailclients.LoginRefused(str(err)) from None
    return client


def refused(stack: Stack, servers: Servers, address: str, password: str) -> bool:
    try:
        imap_login(stack, servers, address, password).logout()
    except mailclients.LoginRefused:
        return True
    return False


def smtp_send(stack: Stack, servers: Servers, address: str, password: str, recipient: str, subject: str) -> None:
    assert servers.smtp_socket == "STARTTLS"
    with smtplib.SMTP(servers.smtp_host, servers.smtp_port, local_hostname="phone.example", timeout=30) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features, "AUTH offered before STARTTLS"
        smtp.starttls(context=tls(stack))
        smtp.ehlo()
        assert {"PLAIN", "LOGIN"} <= set(smtp.esmtp_features["auth"].split())
        smtp.login(address, password)
        smtp.send_message(mailclients.message(address, recipient, subject))


def app_password(stack: Stack, username: str, *, expires: str | None = None, intent: str = "app_password",
                 identifier: str | None = None) -> str:
    """An app password made in authentik's user settings (the stand-in's hook)."""
    key = secrets.token_urlsafe(40)
    idp.add_token(stack.where.auth_url, identifier or f"{username}-phone-{uuid.uuid4().hex[:6]}", key, username,
                  verify=str(stack.ca_file), intent=intent, expires=expires, expiring=expires is not None)
    return key


@pytest.fixture(scope="module")
def servers(stack: Stack) -> Servers:
    found = discover(ALICE)
    assert (found.imap_host, found.imap_port) == (MAIL_HOST, PORTS["imaps"])
    assert (found.smtp_host, found.smtp_port) == (MAIL_HOST, PORTS["submission"])
    return found


def test_a_mail_client_with_only_an_address_and_an_app_password_reads_and_sends(stack: Stack, servers: Servers) -> None:
    password = app_password(stack, "alice")
    subject = f"from a phone {uuid.uuid4().hex[:8]}"
    smtp_send(stack, servers, ALICE, password, BOB, subject)
    imap = imap_login(stack, servers, ALICE, password)
    try:
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    bob = mailclients.imap_login(MAIL_HOST, PORTS["imaps"], stack.ca_file, BOB,
                                 idp.login_and_get_tokens(stack.where.auth_url, stack.client_id, stack.client_secret,
                                                          stack.redirect_uri, "bob", "bob-pw",
                                                          verify=str(stack.ca_file))["access_token"])
    try:
        wait_for(lambda: subject in mailclients.inbox_subjects(bob), "the phone's mail in Bob's inbox", timeout=30)
    finally:
        bob.logout()


def test_the_apple_profile_names_the_servers_and_asks_for_the_rest(stack: Stack) -> None:
    answer = requests.get(f"{ROUNDCUBE_URL}/mail.mobileconfig", timeout=10)
    assert answer.headers["Content-Type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(answer.content)
    [account] = profile["PayloadContent"]
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert (account["IncomingMailServerHostName"], account["IncomingMailServerPortNumber"]) == (MAIL_HOST, PORTS["imaps"])
    assert account["IncomingMailServerUseSSL"] and account["OutgoingMailServerUseSSL"]
    assert "EmailAddress" not in account and "IncomingPassword" not in account  # the device asks


@pytest.mark.parametrize("case", ["wrong password", "login password", "another user's app password",
                                  "an API token", "an expired app password", "a user outside the allowed group"])
def test_a_mail_client_is_refused(stack: Stack, servers: Servers, case: str) -> None:
    # Frank: the checker counts failures per user and client address (every
    # client here shows as the same address); the other tests' users stay clear.
    address, password = FRANK, "not-the-password"
    if case == "login password":
        password = "frank-pw"
    elif case == "another user's app password":
        password = app_password(stack, "bob")
    elif case == "an API token":
        password = app_password(stack, "frank", intent="api")
    elif case == "an expired app password":
        password = app_password(stack, "frank", expires=(datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat())
    elif case == "a user outside the allowed group":
        address, password = CAROL, app_password(stack, "carol")
    before = len(stack.logs("dovecot"))
    assert refused(stack, servers, address, password), case
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp_send(stack, servers, address, password, BOB, "refused")
    # Logged with the client's address, in a line fail2ban can match (never the password).
    log = stack.logs("dovecot")[before:]
    assert f"refused user=<{address}> rip=" in log, log[-2000:]
    assert password not in log


def test_deleting_the_app_password_ends_access_after_the_cache_lifetime(stack: Stack, servers: Servers) -> None:
    identifier = f"bob-phone-{uuid.uuid4().hex[:6]}"
    password = app_password(stack, "bob", identifier=identifier)
    imap_login(stack, servers, BOB, password).logout()
    calls = stack.logs("authentik").count("POST /application/o/token/")
    imap_login(stack, servers, BOB, password).logout()  # a phone polling again: remembered
    assert stack.logs("authentik").count("POST /application/o/token/") == calls, "a cached check asks authentik"
    deleted_at = time.monotonic()
    idp.delete_token(stack.where.auth_url, identifier, verify=str(stack.ca_file))
    wait_for(lambda: refused(stack, servers, BOB, password), "the deleted app password refused",
             timeout=APP_PASSWORD_CACHE_SECONDS + 15)
    assert time.monotonic() - deleted_at <= APP_PASSWORD_CACHE_SECONDS + 15


def test_submission_with_an_app_password_works_right_after_dovecot_reloads(stack: Stack, servers: Servers) -> None:
    """Issue 15's reload case for PLAIN: Postfix's smtpd reconnects to Dovecot's auth socket."""
    password = app_password(stack, "alice")
    smtp_send(stack, servers, ALICE, password, BOB, f"before reload {uuid.uuid4().hex[:8]}")
    dovecot = stack.deployment.container("dovecot")
    old = _auth_processes(stack)
    assert dovecot.exec_run(["doveadm", "reload"]).exit_code == 0
    wait_for(lambda: not (_auth_processes(stack) & old), "Dovecot's old auth process to end", timeout=60)
    smtp_send(stack, servers, ALICE, password, BOB, f"after reload {uuid.uuid4().hex[:8]}")


def test_failed_logins_for_one_user_throttle_that_user_from_that_address_only(stack: Stack, servers: Servers) -> None:
    """After the refusals above (Frank, from the test's address), Frank is throttled
    there: authentik is no longer asked, even his right password waits; Alice,
    from the same address, is not slowed at all."""
    good = app_password(stack, "frank")
    for _ in range(5):
        refused(stack, servers, FRANK, "still-not-the-password")
    calls = stack.logs("authentik").count("POST /application/o/token/")
    assert refused(stack, servers, FRANK, good), "throttled, whatever the password"
    assert stack.logs("authentik").count("POST /application/o/token/") == calls, "a throttled check asked authentik"
    assert "reason=throttled" in stack.logs("dovecot")
    imap_login(stack, servers, ALICE, app_password(stack, "alice")).logout()

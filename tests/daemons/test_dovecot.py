"""Dovecot with the rendered config: OAuth-only IMAP, each token checked by
(fake) authentik's introspection endpoint, over TLS with the stack's CA."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
from dataclasses import replace
from typing import Callable, Optional

from components.render import layout
from daemon_harness import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    REFRESH_TOKEN,
    TOKEN_OF,
    Pki,
    Resources,
    Stack,
    banner,
    exec_in,
    introspection_requests,
    make_variant,
    published_port,
    start_dovecot,
    start_fake_authentik,
    wait_until,
)


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str) -> bytes:
    return f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()


def authenticator(payload: bytes) -> Callable[[bytes], Optional[bytes]]:
    """Sends the payload once; answers a failure's error challenge with an empty line."""
    sent = []

    def answer(challenge: bytes) -> bytes:
        if sent:
            return b""
        sent.append(True)
        return payload

    return answer


def imap_login(port: int, mechanism: str, payload: bytes, use_ssl: bool = False, starttls: bool = True) -> str:
    """The tagged answer to AUTHENTICATE: "OK" or the error imaplib raised.

    Like a mail client, it says STARTTLS first when the server offers it
    (with tls, Dovecot offers no mechanism before); starttls=False does not.
    """
    client = (
        imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=_unverified())
        if use_ssl
        else imaplib.IMAP4("127.0.0.1", port)
    )
    if starttls and not use_ssl and "STARTTLS" in client.capabilities:
        client.starttls(ssl_context=_unverified())
    try:
        typ, _ = client.authenticate(mechanism, authenticator(payload))
        client.select("INBOX")
        return typ
    except imaplib.IMAP4.error as err:
        return f"refused: {err}"
    finally:
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_imap_offers_only_its_mechanisms_and_with_tls_none_before_starttls(stack: Stack) -> None:
    client = imaplib.IMAP4("127.0.0.1", stack.ports["imap"])
    try:
        before = set(client.capabilities)
        if stack.variant.settings.tls is not None:
            client.starttls(ssl_context=_unverified())
        capabilities = set(client.capabilities)
    finally:
        client.logout()
    offered = {"AUTH=XOAUTH2", "AUTH=OAUTHBEARER"}
    if stack.variant.settings.clients.app_passwords:
        offered |= {"AUTH=PLAIN", "AUTH=LOGIN"}
    assert {c for c in capabilities if c.startswith("AUTH=")} == offered, capabilities
    assert ("STARTTLS" in before) == (stack.variant.settings.tls is not None)
    if stack.variant.settings.tls is not None:
        # Dovecot counts the token mechanisms as plaintext: no login in clear, of any kind.
        assert not {c for c in before if c.startswith("AUTH=")} and "LOGINDISABLED" in before, before
        answer = imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), starttls=False)
        assert answer.startswith("refused"), answer


def test_imap_xoauth2_with_a_valid_token_logs_in_after_one_introspection(stack: Stack) -> None:
    before = len(stack.introspection_requests())
    assert imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE])) == "OK", stack.logs()
    requests = stack.introspection_requests()[before:]
    assert len(requests) == 1, requests
    # POST to authentik's endpoint, the client's credentials as HTTP Basic.
    assert requests[0]["request"].startswith("POST /application/o/introspect/ ")
    assert requests[0]["basic"] == f"{stack.variant.client_id}:{stack.variant.client_secret}"
    assert requests[0]["token"] == TOKEN_OF[ALICE]


def test_imap_oauthbearer_with_a_valid_token_logs_in(stack: Stack) -> None:
    assert imap_login(stack.ports["imap"], "OAUTHBEARER", oauthbearer(BOB, TOKEN_OF[BOB])) == "OK", stack.logs()


def test_a_user_whose_email_has_capitals_logs_in_with_either_case(stack: Stack) -> None:
    for login in (CAROL, CAROL.lower()):
        assert imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(login, TOKEN_OF[CAROL])) == "OK", stack.logs()


def test_imap_refuses_a_garbage_token(stack: Stack) -> None:
    before = len(stack.introspection_requests())
    garbage = "eyJhbGciOiJSUzI1NiJ9.Z2FyYmFnZQ.Z2FyYmFnZQ"  # shaped like a JWT: authentik decides
    answer = imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(ALICE, garbage))
    assert answer.startswith("refused"), answer
    assert [r["token"] for r in stack.introspection_requests()[before:]] == [garbage]


def test_a_refresh_token_is_refused_without_asking_authentik(stack: Stack) -> None:
    """authentik's introspection reports refresh tokens active (so does the fake):
    the container's filter refuses anything that is not a JWT before asking."""
    for payload in (xoauth2(ALICE, REFRESH_TOKEN), oauthbearer(ALICE, REFRESH_TOKEN), xoauth2(ALICE, "garbage")):
        before = len(stack.introspection_requests())
        answer = imap_login(stack.ports["imap"], "XOAUTH2" if payload.startswith(b"user=") else "OAUTHBEARER", payload)
        assert answer.startswith("refused"), answer
        assert stack.introspection_requests()[before:] == []
    assert "not a JWT" in stack.dovecot.logs().decode(errors="replace")


def test_imap_refuses_a_valid_token_for_another_user(stack: Stack) -> None:
    answer = imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(BOB, TOKEN_OF[ALICE]))
    assert answer.startswith("refused"), answer


def test_imap_refuses_a_valid_token_whose_email_is_outside_the_mail_domain(stack: Stack) -> None:
    """authentik vouches for dave@elsewhere.example; this server holds only mail_domain's mailboxes."""
    for mechanism, payload in (("XOAUTH2", xoauth2), ("OAUTHBEARER", oauthbearer)):
        answer = imap_login(stack.ports["imap"], mechanism, payload(DAVE, TOKEN_OF[DAVE]))
        assert answer.startswith("refused"), (mechanism, answer)
    found = stack.dovecot.exec_run(["test", "-e", "/var/mail/elsewhere.example"])
    assert found.exit_code != 0, "a mailbox was made for a foreign domain"


def test_lmtp_accepts_the_mail_domain_and_refuses_other_domains_permanently(stack: Stack) -> None:
    client = smtplib.LMTP("127.0.0.1", stack.ports["lmtp"], timeout=30)
    try:
        client.ehlo("postfix.test")
        assert client.mail("sender@elsewhere.test")[0] == 250
        assert client.rcpt(ALICE)[0] == 250
        code, answer = client.rcpt(DAVE)
        assert 500 <= code < 600, (code, answer)
    finally:
        client.close()


def test_imaps_listens_and_logs_in_over_tls_only_when_the_stack_has_tls(stack: Stack) -> None:
    listening = exec_in(stack.dovecot, ["sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true"])
    imaps_listens = any(
        fields[1].endswith(f":{layout.IMAPS_PORT:04X}") and fields[3] == "0A"  # 0A: LISTEN
        for fields in (line.split() for line in listening.splitlines()[1:])
        if len(fields) > 3
    )
    assert imaps_listens == (stack.variant.settings.tls is not None), listening
    if stack.variant.settings.tls is None:
        return
    answer = imap_login(stack.ports["imaps"], "XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), use_ssl=True)
    assert answer == "OK", stack.logs()


def test_dovecot_trusts_only_the_configured_authentik_ca(
    resources: Resources, images: dict[str, str], pki: Pki
) -> None:
    """A CA that did not sign authentik's certificate: no token is accepted."""
    variant = make_variant("prod", pki)
    wrong = variant.settings.model_copy(update={"authentik_ca_file": pki.other_ca})
    network = resources.network()
    authentik = start_fake_authentik(resources, images, network, variant, pki)
    dovecot = start_dovecot(resources, images, network, variant, settings=wrong)
    port = published_port(dovecot, layout.IMAP_PORT)
    wait_until("the fake authentik", lambda: b"listening" in authentik.logs(), [authentik, dovecot])
    wait_until("Dovecot's IMAP greeting", lambda: banner(port, b"* OK"), [authentik, dovecot])

    answer = imap_login(port, "XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]))
    assert answer.startswith("refused"), answer
    assert introspection_requests(authentik) == [], "no request may pass an untrusted TLS handshake"
    assert b"certificate" in dovecot.logs().lower(), dovecot.logs()[-3000:]


def test_credentials_with_reserved_characters_reach_authentik_intact(
    resources: Resources, images: dict[str, str], pki: Pki
) -> None:
    """The program generates alphanumeric credentials; the URL encoding must hold for others.

    Dovecot percent-decodes the URL's user info and sends the raw credentials as HTTP Basic.
    """
    variant = replace(make_variant("dev", pki), client_id="id@odd/chars%41", client_secret='p%40ss:w@rd/?#%{user}"\\ $SET')
    network = resources.network()
    authentik = start_fake_authentik(resources, images, network, variant, pki)
    dovecot = start_dovecot(resources, images, network, variant)
    port = published_port(dovecot, layout.IMAP_PORT)
    wait_until("the fake authentik", lambda: b"listening" in authentik.logs(), [authentik, dovecot])
    wait_until("Dovecot's IMAP greeting", lambda: banner(port, b"* OK"), [authentik, dovecot])

    answer = imap_login(port, "XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]))
    assert answer == "OK", authentik.logs().decode() + dovecot.logs().decode()[-3000:]
    [request] = introspection_requests(authentik)
    assert request["basic"] == f"{variant.client_id}:{variant.client_secret}"


def test_delivery_over_the_mailbox_quota_is_refused_permanently_at_lmtp(
    resources: Resources, images: dict[str, str], pki: Pki
) -> None:
    variant = make_variant("dev", pki, mailbox_quota="1M")
    network = resources.network()
    dovecot = start_dovecot(resources, images, network, variant)
    port = published_port(dovecot, layout.LMTP_PORT)
    wait_until("Dovecot's LMTP greeting", lambda: banner(port, b"220"), [dovecot])

    def deliver(size: int) -> tuple[int, bytes]:
        client = smtplib.LMTP("127.0.0.1", port, timeout=30)
        try:
            client.ehlo("postfix.test")
            client.mail("sender@elsewhere.test")
            code, answer = client.rcpt(ALICE)
            if code != 250:
                return code, answer
            return client.data(b"Subject: quota\r\n\r\n" + b"x" * size + b"\r\n")
        finally:
            client.close()

    # Under quota: accepted, and this one fills the mailbox past 1 MB.
    assert deliver(1_500_000)[0] == 250, dovecot.logs().decode()[-2000:]
    code, answer = deliver(1000)
    assert code == 552, (code, answer)  # 5xx: the sender's server bounces, never retries
    assert b"Quota exceeded" in answer, answer


def test_with_app_passwords_plain_and_login_are_offered_only_inside_tls(stack: Stack) -> None:
    """clients.app_passwords (the prod stack): PLAIN and LOGIN appear after STARTTLS and
    on IMAPS, never before; without app passwords (dev) never at all."""
    client = imaplib.IMAP4("127.0.0.1", stack.ports["imap"])
    try:
        before = set(client.capabilities)
        if stack.variant.settings.tls is not None:
            client.starttls(ssl_context=_unverified())
        after = set(client.capabilities)
    finally:
        client.logout()
    passwords = {"AUTH=PLAIN", "AUTH=LOGIN"}
    assert not passwords & before, before
    assert (passwords <= after) == stack.variant.settings.clients.app_passwords, after
    if stack.variant.settings.clients.app_passwords:
        # A password sent in clear anyway is refused before anyone checks it.
        answer = imap_login(stack.ports["imap"], "PLAIN", f"\0{ALICE}\0not-sent-in-clear".encode(), starttls=False)
        assert answer.startswith("refused"), answer

"""Postfix with the rendered main.cf / master.cf, next to Dovecot: SASL through
Dovecot's auth service, delivery over LMTP into Dovecot's maildirs."""

from __future__ import annotations

import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage
from typing import Callable

import pytest

from daemon_harness import ALICE, BOB, CAROL, DAVE, TOKEN_OF, Stack, exec_in


def xoauth2(user: str, token: str) -> Callable[..., str]:
    """smtplib authobject: the initial response, then an empty answer to an error challenge."""
    sent = []

    def answer(challenge: bytes | None = None) -> str:
        if sent:
            return ""
        sent.append(True)
        return f"user={user}\x01auth=Bearer {token}\x01\x01"

    return answer


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(stack: Stack, port_name: str, starttls: bool = True) -> smtplib.SMTP:
    """A session on a port; on the submission ports, STARTTLS first when offered, as mail clients do."""
    client = smtplib.SMTP("127.0.0.1", stack.ports[port_name], local_hostname="client.test", timeout=30)
    client.ehlo()
    if starttls and port_name in ("submission", "webmail_submission") and client.has_extn("starttls"):
        client.starttls(context=_unverified())
        client.ehlo()
    return client


def auth_mechanisms(client: smtplib.SMTP) -> set[str]:
    return set(client.esmtp_features.get("auth", "").split())


def mechanisms(stack: Stack) -> set[str]:
    """What Dovecot offers through Postfix once the session may authenticate."""
    return {"XOAUTH2", "OAUTHBEARER"} | ({"PLAIN", "LOGIN"} if stack.variant.settings.clients.app_passwords else set())


def message(sender: str, recipient: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"] = sender, recipient
    mail["Subject"] = f"rca daemon test {uuid.uuid4().hex}"
    mail.set_content("Hello from the daemon tests.\n")
    return mail


def delivered(stack: Stack, user: str, subject: str, seconds: float = 30) -> str:
    """The maildir file (in Dovecot's volume) of the message with that subject."""
    local, domain = user.split("@")
    folder = f"/var/mail/{domain}/{local}/Maildir/new"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = stack.dovecot.exec_run(["grep", "-rl", "--fixed-strings", f"Subject: {subject}", folder])
        if found.exit_code == 0:
            return found.output.decode().split()[0]
        time.sleep(0.5)
    pytest.fail(f"no message {subject!r} in {folder}:\n{stack.logs()}")


def test_submission_offers_xoauth2_and_oauthbearer_only_over_tls_when_tls_is_set(stack: Stack) -> None:
    client = connect(stack, "submission", starttls=False)
    try:
        if stack.variant.settings.tls is not None:
            assert auth_mechanisms(client) == set(), "AUTH before STARTTLS: " + str(client.esmtp_features)
            client.starttls(context=_unverified())
            client.ehlo()
        assert auth_mechanisms(client) == mechanisms(stack), client.esmtp_features
    finally:
        client.quit()


def test_webmail_submission_offers_auth_in_clear_only_without_tls(stack: Stack) -> None:
    """Roundcube's port: with tls, AUTH only after STARTTLS, as everywhere; without, in clear."""
    client = connect(stack, "webmail_submission", starttls=False)
    try:
        if stack.variant.settings.tls is not None:
            assert auth_mechanisms(client) == set(), "AUTH before STARTTLS: " + str(client.esmtp_features)
            client.starttls(context=_unverified())
            client.ehlo()
        else:
            assert not client.has_extn("starttls")
        assert auth_mechanisms(client) == mechanisms(stack), client.esmtp_features
    finally:
        client.quit()


def test_inbound_smtp_offers_no_auth_and_starttls_only_with_tls(stack: Stack) -> None:
    client = connect(stack, "smtp")
    try:
        assert auth_mechanisms(client) == set()
        assert client.has_extn("starttls") == (stack.variant.settings.tls is not None)
    finally:
        client.quit()


def test_a_long_token_inline_on_the_auth_line_logs_in_and_mail_reaches_the_other_users_maildir(stack: Stack) -> None:
    # Bob's token is ~1800 characters, like authentik's JWTs.
    mail = message(BOB, ALICE)
    client = connect(stack, "webmail_submission")
    try:
        code, answer = client.auth("XOAUTH2", xoauth2(BOB, TOKEN_OF[BOB]), initial_response_ok=True)
        assert code == 235, answer
        assert client.send_message(mail) == {}
    finally:
        client.quit()
    path = delivered(stack, ALICE, mail["Subject"])
    owner = exec_in(stack.dovecot, ["stat", "-c", "%u:%g", path]).strip()
    assert owner == "5000:5000"


def test_submission_port_authenticates_and_sends(stack: Stack) -> None:
    mail = message(ALICE, BOB)
    client = connect(stack, "submission")
    try:
        code, answer = client.auth("XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)
        assert code == 235, answer
        assert client.send_message(mail) == {}
    finally:
        client.quit()
    delivered(stack, BOB, mail["Subject"])


def test_a_user_whose_email_has_capitals_sends_as_that_address_in_either_case(stack: Stack) -> None:
    for sender in (CAROL, CAROL.lower()):
        mail = message(sender, ALICE)
        client = connect(stack, "webmail_submission")
        try:
            code, answer = client.auth("XOAUTH2", xoauth2(CAROL, TOKEN_OF[CAROL]), initial_response_ok=True)
            assert code == 235, answer
            assert client.send_message(mail) == {}
        finally:
            client.quit()
        delivered(stack, ALICE, mail["Subject"])


def test_a_user_cannot_send_as_another_address(stack: Stack) -> None:
    client = connect(stack, "webmail_submission")
    try:
        client.auth("XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message(BOB, ALICE))
    finally:
        client.quit()
    code, answer = refused.value.recipients[ALICE]
    assert code == 553 and b"not owned by user" in answer, answer


def test_submission_refuses_a_valid_token_whose_email_is_outside_the_mail_domain(stack: Stack) -> None:
    for port_name in ("submission", "webmail_submission"):
        client = connect(stack, port_name)
        try:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.auth("XOAUTH2", xoauth2(DAVE, TOKEN_OF[DAVE]), initial_response_ok=True)
        finally:
            client.quit()
    # A user of the domain logs in right after (no auth penalty for the address).
    client = connect(stack, "webmail_submission")
    try:
        assert client.auth("XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)[0] == 235
    finally:
        client.quit()


def test_a_user_cannot_send_as_the_same_name_in_another_domain(stack: Stack) -> None:
    client = connect(stack, "webmail_submission")
    try:
        client.auth("XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message("alice@elsewhere.example", BOB))
    finally:
        client.quit()
    code, answer = refused.value.recipients[BOB]
    assert code == 553 and b"not owned by user" in answer, answer


def test_a_garbage_token_is_refused(stack: Stack) -> None:
    client = connect(stack, "webmail_submission")
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("XOAUTH2", xoauth2(ALICE, "garbage"), initial_response_ok=True)
    finally:
        client.quit()


def test_submission_without_login_is_refused(stack: Stack) -> None:
    client = connect(stack, "webmail_submission")
    try:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(message(ALICE, BOB))
    finally:
        client.quit()


def test_inbound_smtp_accepts_mail_for_the_domain_and_refuses_relaying(stack: Stack) -> None:
    mail = message("someone@elsewhere.test", BOB)
    client = connect(stack, "smtp")
    try:
        assert client.send_message(mail) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message("someone@elsewhere.test", "victim@elsewhere.test"))
    finally:
        client.quit()
    code, answer = refused.value.recipients["victim@elsewhere.test"]
    assert code == 554 and b"Relay access denied" in answer, answer
    delivered(stack, BOB, mail["Subject"])


def test_with_app_passwords_submission_offers_plain_and_login_only_after_starttls(stack: Stack) -> None:
    for port_name in ("submission", "webmail_submission"):
        client = connect(stack, port_name, starttls=False)
        try:
            before = auth_mechanisms(client)
            if stack.variant.settings.tls is not None:
                client.starttls(context=_unverified())
                client.ehlo()
            after = auth_mechanisms(client)
        finally:
            client.quit()
        assert not {"PLAIN", "LOGIN"} & before, (port_name, before)
        assert ({"PLAIN", "LOGIN"} <= after) == stack.variant.settings.clients.app_passwords, (port_name, after)

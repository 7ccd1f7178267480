"""authentik is the mail directory: the real directory sync (images/postfix/
directory-sync.py, its own locked-down container of the Postfix image) reads
the (fake) authentik's users and groups and writes Postfix's hashed maps and
Dovecot's passwd-file; the real Postfix and Dovecot read them.

These run on the prod stack (directory: authentik); the dev stack keeps
`directory: open`, today's catch-all, and test_open_directory_* below show it.
"""

from __future__ import annotations

import copy
import smtplib
import time
from typing import Any

import pytest

from daemon_harness import (
    ALICE,
    BOB,
    DIRECTORY,
    ERIN,
    STAFF,
    TOKEN_OF,
    Stack,
    exec_in,
    set_directory,
    wait_until,
)
from test_dovecot import imap_login, xoauth2
from test_postfix import connect, message
from test_postfix import xoauth2 as smtp_xoauth2

DOMAIN = "example.com"


def _with_directory(stack: Stack) -> Stack:
    assert stack.variant.settings.directory.source == "authentik" and stack.directory_sync is not None
    return stack


directory_only = pytest.mark.parametrize("variant", ["prod"], indirect=True)


def _rcpt(stack: Stack, recipient: str, port_name: str = "smtp") -> tuple[int, bytes]:
    client = connect(stack, port_name)
    try:
        if port_name == "webmail_submission":
            assert client.auth("XOAUTH2", smtp_xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)[0] == 235
        client.mail("someone@elsewhere.test" if port_name == "smtp" else ALICE)
        return client.rcpt(recipient)
    finally:
        client.close()


def _inbox(stack: Stack, folder: str) -> list[str]:
    """Subjects in a maildir (new/ and cur/, in Dovecot's volume)."""
    found = stack.dovecot.exec_run(["sh", "-c", f"cat /var/mail/{DOMAIN}/{folder}/Maildir/new/* /var/mail/{DOMAIN}/{folder}/Maildir/cur/* 2>/dev/null"]).output
    return [line.split(":", 1)[1].strip() for line in found.decode(errors="replace").splitlines()
            if line.startswith("Subject:")]


def _send(stack: Stack, recipients: list[str], subject: str) -> None:
    mail = message("someone@elsewhere.test", recipients[0])
    del mail["Subject"]
    mail["Subject"] = subject
    client = connect(stack, "smtp")
    try:
        assert client.send_message(mail, to_addrs=recipients) == {}
    finally:
        client.quit()


def _eventually(stack: Stack, what: str, check: Any, seconds: float = 30) -> None:
    wait_until(what, check, [stack.postfix, stack.dovecot, stack.directory_sync], seconds)


def _sync_once(stack: Stack) -> tuple[int, str]:
    """One round of the sync now, as its loop would run it at the next interval."""
    result = stack.directory_sync.exec_run(["/usr/local/bin/directory-sync", "/etc/roundcube-authentik/directory/sync.json",
                                            "--once"])
    return result.exit_code, result.output.decode(errors="replace")


@directory_only
def test_an_unknown_recipient_is_refused_during_the_smtp_dialogue(stack: Stack) -> None:
    stack = _with_directory(stack)
    for port_name in ("smtp", "webmail_submission"):
        code, answer = _rcpt(stack, f"nobody@{DOMAIN}", port_name)
        assert code == 550 and answer.startswith(b"5.1.1"), (port_name, code, answer)
    # A deactivated user and one with an email in another domain are no mailboxes either.
    assert _rcpt(stack, ERIN)[0] == 550
    assert stack.dovecot.exec_run(["test", "-e", f"/var/mail/{DOMAIN}/nobody"]).exit_code != 0


@directory_only
def test_aliases_lists_postmaster_and_abuse_deliver_to_their_owners(stack: Stack) -> None:
    stack = _with_directory(stack)
    subject = f"directory {time.monotonic_ns()}"
    _send(stack, [f"al@{DOMAIN}", STAFF, f"postmaster@{DOMAIN}", f"abuse@{DOMAIN}"], subject)
    # alice: her alias, the list, postmaster@ and abuse@ (one delivery each); bob: the list.
    _eventually(stack, "the mail in Alice's and Bob's inboxes",
                lambda: _inbox(stack, "alice").count(subject) >= 1 and subject in _inbox(stack, "bob"))
    assert not exec_in(stack.dovecot, ["sh", "-c", f"ls /var/mail/{DOMAIN}"]).count("postmaster")


@directory_only
def test_a_user_sends_as_an_alias_of_theirs_but_not_as_a_list(stack: Stack) -> None:
    stack = _with_directory(stack)
    client = connect(stack, "webmail_submission")
    try:
        assert client.auth("XOAUTH2", smtp_xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)[0] == 235
        assert client.send_message(message(f"al@{DOMAIN}", BOB)) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.send_message(message(STAFF, BOB))
    finally:
        client.quit()
    assert refused.value.recipients[BOB][0] == 553


@directory_only
def test_the_quota_from_authentik_is_enforced_and_a_malformed_one_is_skipped(stack: Stack) -> None:
    stack = _with_directory(stack)
    quotas = {user: exec_in(stack.dovecot, ["doveadm", "quota", "get", "-u", f"{user}@{DOMAIN}"]) for user in ("frank", "grace")}
    assert " 1024 " in quotas["frank"], quotas["frank"]  # mail_quota 1M, in KiB
    assert " 5242880 " in quotas["grace"], quotas["grace"]  # `lots`: skipped, the stack's 5G stays

    def deliver(size: int) -> int:
        client = smtplib.LMTP("127.0.0.1", stack.ports["lmtp"], timeout=30)
        try:
            client.ehlo("postfix.test")
            client.mail("sender@elsewhere.test")
            code, _ = client.rcpt(f"frank@{DOMAIN}")
            return code if code != 250 else client.data(b"Subject: quota\r\n\r\n" + b"x" * size + b"\r\n")[0]
        finally:
            client.close()

    assert deliver(1_500_000) == 250
    assert deliver(1000) == 552


@directory_only
def test_a_malformed_attribute_is_skipped_with_one_line_and_the_rest_stays(stack: Stack) -> None:
    stack = _with_directory(stack)
    assert _rcpt(stack, f"grace@{DOMAIN}")[0] == 250
    assert _rcpt(stack, f"g@{DOMAIN}")[0] == 250  # her good alias
    log = stack.directory_sync.logs().decode(errors="replace")
    lines = [line for line in log.splitlines() if "grace" in line]
    assert any("mail_quota" in line for line in lines) and any("mail_aliases" in line for line in lines), lines


@directory_only
def test_a_user_missing_from_the_directory_cannot_log_in_though_authentik_vouches_for_the_token(stack: Stack) -> None:
    stack = _with_directory(stack)
    answer = imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(ERIN, TOKEN_OF[ERIN]))
    assert answer.startswith("refused"), answer
    client = connect(stack, "webmail_submission")
    try:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("XOAUTH2", smtp_xoauth2(ERIN, TOKEN_OF[ERIN]), initial_response_ok=True)
    finally:
        client.close()


@directory_only
def test_deactivating_a_user_stops_mail_and_logins_and_keeps_their_mail(stack: Stack) -> None:
    stack = _with_directory(stack)
    subject = f"before deactivation {time.monotonic_ns()}"
    _send(stack, [BOB], subject)
    _eventually(stack, "the mail in Bob's inbox", lambda: subject in _inbox(stack, "bob"))
    without_bob = copy.deepcopy(DIRECTORY)
    next(u for u in without_bob["users"] if u["username"] == "bob")["is_active"] = False
    set_directory(stack.authentik, without_bob)
    try:
        assert _sync_once(stack)[0] == 0
        _eventually(stack, "Bob refused at RCPT", lambda: _rcpt(stack, BOB)[0] == 550)
        _eventually(stack, "Bob's login refused",
                    lambda: imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(BOB, TOKEN_OF[BOB])).startswith("refused"))
        assert subject in _inbox(stack, "bob"), "a deactivated user's mail stays on disk"
        assert _rcpt(stack, STAFF)[0] == 250  # the list keeps its other member
    finally:
        set_directory(stack.authentik, DIRECTORY)
        assert _sync_once(stack)[0] == 0
    _eventually(stack, "Bob back", lambda: imap_login(stack.ports["imap"], "XOAUTH2", xoauth2(BOB, TOKEN_OF[BOB])) == "OK")


@directory_only
def test_authentik_down_or_answering_nobody_never_empties_the_directory(stack: Stack) -> None:
    stack = _with_directory(stack)
    sync = ["/usr/local/bin/directory-sync", "/etc/roundcube-authentik/directory/sync.json", "--check"]
    try:
        set_directory(stack.authentik, None)  # authentik answers 503
        code, output = _sync_once(stack)
        assert code != 0 and "503" in output, output
        assert stack.directory_sync.exec_run(sync).exit_code != 0, "the healthcheck shows the failure"
        subject = f"authentik down {time.monotonic_ns()}"
        _send(stack, [BOB], subject)
        _eventually(stack, "the mail in Bob's inbox while authentik is down", lambda: subject in _inbox(stack, "bob"))

        set_directory(stack.authentik, {"users": [], "groups": []})  # a sudden empty directory
        code, output = _sync_once(stack)
        assert code != 0 and "REFUSED" in output, output
        assert _rcpt(stack, BOB)[0] == 250
    finally:
        set_directory(stack.authentik, DIRECTORY)
        assert _sync_once(stack)[0] == 0
    assert stack.directory_sync.exec_run(sync).exit_code == 0


def test_open_directory_accepts_every_safe_local_part(stack: Stack) -> None:
    """directory: open (the dev stack): today's catch-all, chosen explicitly."""
    if stack.variant.settings.directory.source == "open":
        assert _rcpt(stack, f"anyone-{time.monotonic_ns()}@{DOMAIN}")[0] == 250
    else:
        assert _rcpt(stack, f"anyone-{time.monotonic_ns()}@{DOMAIN}")[0] == 550

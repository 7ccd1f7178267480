"""Local parts can never escape a mailbox's folder.

Dovecot files a user's mail under /var/mail/<domain>/<folder>: a local part
such as `..` or `.` would name the mail volume's or the domain's own folder,
and `/` another path. Such recipients are refused during the SMTP dialogue,
on every port that accepts recipients, and Dovecot refuses them over LMTP
too, whatever Postfix lets through.
"""

from __future__ import annotations

import smtplib

import pytest

from daemon_harness import Stack, exec_in
from test_postfix import connect

DOMAIN = "example.com"
# As a client writes them in RCPT TO (quoted where SMTP needs quotes).
UNSAFE = [
    f'"."@{DOMAIN}',
    f'".."@{DOMAIN}',
    f'"../alice"@{DOMAIN}',
    f'"a/b"@{DOMAIN}',
    f'"a b"@{DOMAIN}',
    f'".alice"@{DOMAIN}',
    f'"alice."@{DOMAIN}',
    f'"al..ice"@{DOMAIN}',
    f'"alice%{DOMAIN}"@{DOMAIN}',
    f'"alice\\"x"@{DOMAIN}',
]


def _rcpt(client: smtplib.SMTP, recipient: str) -> tuple[int, bytes]:
    # smtplib would quote or refuse some of these: send the command as written.
    client.putcmd(f"RCPT TO:<{recipient}>")
    return client.getreply()


def _folders(stack: Stack) -> str:
    return exec_in(stack.dovecot, ["find", "/var/mail", "-maxdepth", "3", "-type", "d"])


@pytest.mark.parametrize("port_name", ["smtp", "webmail_submission"])
def test_unsafe_local_parts_are_refused_at_rcpt(stack: Stack, port_name: str) -> None:
    before = _folders(stack)
    client = connect(stack, port_name)
    try:
        if port_name == "webmail_submission":
            from daemon_harness import ALICE, TOKEN_OF
            from test_postfix import xoauth2

            assert client.auth("XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)[0] == 235
        assert client.mail("sender@elsewhere.test" if port_name == "smtp" else "alice@example.com")[0] == 250
        for recipient in UNSAFE:
            code, answer = _rcpt(client, recipient)
            assert 500 <= code < 600, (recipient, code, answer)
    finally:
        client.close()
    assert _folders(stack) == before, "a folder was made for an unsafe recipient"


def test_lmtp_refuses_unsafe_local_parts_whatever_postfix_lets_through(stack: Stack) -> None:
    before = _folders(stack)
    client = smtplib.LMTP("127.0.0.1", stack.ports["lmtp"], timeout=30)
    try:
        client.ehlo("postfix.test")
        assert client.mail("sender@elsewhere.test")[0] == 250
        for recipient in UNSAFE:
            code, answer = _rcpt(client, recipient)
            assert 500 <= code < 600, (recipient, code, answer)
    finally:
        client.close()
    assert _folders(stack) == before, "a folder was made for an unsafe recipient"

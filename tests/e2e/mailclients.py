"""IMAP and SMTP clients speaking XOAUTH2 / OAUTHBEARER to the published ports."""

from __future__ import annotations

import email.message
import imaplib
import smtplib
import ssl
from pathlib import Path
from typing import Callable


def xoauth2(user: str, token: str) -> str:
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def oauthbearer(user: str, token: str) -> str:
    return f"n,a={user},\x01auth=Bearer {token}\x01\x01"


def _answer_once(initial: str) -> Callable[[bytes], bytes]:
    # After a failed XOAUTH2 the server sends an error as a continuation and
    # waits for an empty line; answering it again would stall the exchange.
    sent = []

    def respond(_challenge: bytes) -> bytes:
        if sent:
            return b""
        sent.append(True)
        return initial.encode()

    return respond


class LoginRefused(Exception):
    """The server refused the login (the test reads why from the daemon's log)."""


def imap_login(host: str, port: int, ca_file: Path, user: str, token: str, mechanism: str = "XOAUTH2") -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=str(ca_file))
    imap = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=30)
    initial = xoauth2(user, token) if mechanism == "XOAUTH2" else oauthbearer(user, token)
    try:
        imap.authenticate(mechanism, _answer_once(initial))
    except imaplib.IMAP4.error as err:
        imap.shutdown()
        raise LoginRefused(str(err)) from None
    return imap


def inbox_subjects(imap: imaplib.IMAP4_SSL) -> list[str]:
    imap.select("INBOX", readonly=True)
    _, data = imap.search(None, "ALL")
    subjects = []
    for number in data[0].split():
        _, parts = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        header = parts[0][1].decode(errors="replace")
        subjects.append(header.split(":", 1)[1].strip() if ":" in header else "")
    return subjects


def smtp_submit(host: str, port: int, ca_file: Path, user: str, token: str, message: email.message.EmailMessage) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        smtp.ehlo("client.example.test")
        smtp.starttls(context=context)
        smtp.ehlo("client.example.test")
        try:
            code, answer = smtp.auth("XOAUTH2", lambda challenge=None: "" if challenge else xoauth2(user, token))
        except smtplib.SMTPAuthenticationError as err:
            raise LoginRefused(str(err)) from None
        # smtplib returns 503 without raising; only 235 is a successful login.
        if code != 235:
            raise LoginRefused(f"{code} {answer!r}")
        smtp.send_message(message)


def message(sender: str, recipient: str, subject: str, body: str = "Sent by the end-to-end test.") -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = subject
    msg.set_content(body)
    return msg

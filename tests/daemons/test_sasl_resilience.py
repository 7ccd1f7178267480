"""Submission keeps working when Dovecot's auth service goes away and comes back,
and one client's failed logins never slow or refuse anyone else's.

Postfix's smtpd processes keep one connection to Dovecot's auth service across
SMTP sessions (xsasl_dovecot_server.c). When Dovecot's auth process ends
(`doveadm reload`, which the JWKS sync runs after a key change; a restart; a
replaced container), that connection is dead, and the next AUTH on that smtpd
must still succeed: no client may see a 454 for it.
"""

from __future__ import annotations

import smtplib
import time

import pytest

from daemon_harness import ALICE, BOB, TOKEN_OF, Stack, banner, exec_in, published_port, wait_until
from test_postfix import connect, message, xoauth2

# Postfix's smtpd exits after max_idle (100 s) without a client: every step
# below runs well within that, so the same smtpd serves each AUTH.
SMTPD_MAX_IDLE = 100


def _pids(container, prefix: str) -> set[str]:
    """Pids of the processes whose command line starts with `prefix`."""
    script = (
        'for p in /proc/[0-9]*; do '
        'c=$(tr "\\0" " " < "$p/cmdline" 2>/dev/null) || continue; '
        f'case "$c" in "{prefix}"*) echo "${{p#/proc/}}";; esac; done'
    )
    return set(exec_in(container, ["sh", "-c", script]).split())


def _auth_and_send(stack: Stack) -> tuple[int, bytes]:
    """One SMTP session on Roundcube's submission port: AUTH XOAUTH2, and a mail if it succeeded."""
    client = connect(stack, "webmail_submission")
    try:
        code, answer = client.auth("XOAUTH2", xoauth2(ALICE, TOKEN_OF[ALICE]), initial_response_ok=True)
        if code == 235:
            assert client.send_message(message(ALICE, BOB)) == {}
        return code, answer
    except smtplib.SMTPAuthenticationError as err:
        return err.smtp_code, err.smtp_error
    finally:
        client.quit()


def _wait_gone(stack: Stack, pids: set[str]) -> None:
    """Dovecot signals the old auth process a few seconds after a reload; until it ends, nothing changed."""
    wait_until("the old auth process to end", lambda: not (_pids(stack.dovecot, "dovecot/auth") & pids), [stack.dovecot], 60)


def test_auth_on_the_same_smtpd_succeeds_after_a_dovecot_reload_and_a_restart(stack: Stack) -> None:
    started = time.monotonic()
    assert _auth_and_send(stack)[0] == 235, stack.logs()
    smtpd = _pids(stack.postfix, f"smtpd -n {10587}")
    assert smtpd, "no smtpd process serves Roundcube's submission port"

    auth = _pids(stack.dovecot, "dovecot/auth")
    exec_in(stack.dovecot, ["doveadm", "reload"])
    _wait_gone(stack, auth)
    assert _auth_and_send(stack) == (235, b"2.7.0 Authentication successful"), stack.logs()

    stack.dovecot.restart(timeout=10)
    # A restart may publish Dovecot on other host ports; later tests read them here.
    stack.ports["imap"] = published_port(stack.dovecot, 143)
    stack.ports["lmtp"] = published_port(stack.dovecot, 24)
    if "imaps" in stack.ports:
        stack.ports["imaps"] = published_port(stack.dovecot, 993)
    wait_until("Dovecot's IMAP greeting after the restart", lambda: banner(stack.ports["imap"], b"* OK"), [stack.dovecot])
    assert _auth_and_send(stack) == (235, b"2.7.0 Authentication successful"), stack.logs()

    # Each AUTH above ran on an smtpd that was already connected to Dovecot's old auth process.
    assert smtpd <= _pids(stack.postfix, f"smtpd -n {10587}"), "the smtpd of the first AUTH went away"
    assert time.monotonic() - started < SMTPD_MAX_IDLE


# An IMAP login from inside another container, with its PHP: STARTTLS when
# Dovecot offers it (with tls, no mechanism is offered before), then XOAUTH2.
_IMAP_FROM = r"""
$s = stream_socket_client("tcp://dovecot:143", $errno, $error, 10);
stream_context_set_option($s, "ssl", "verify_peer", false);
stream_context_set_option($s, "ssl", "verify_peer_name", false);
$line = fgets($s);
fwrite($s, "s STARTTLS
");
while (($line = fgets($s)) !== false && !str_starts_with($line, "s ")) {}
if (str_starts_with($line, "s OK")) {
    stream_socket_enable_crypto($s, true, STREAM_CRYPTO_METHOD_TLS_CLIENT);
}
fwrite($s, "a AUTHENTICATE XOAUTH2 " . $argv[1] . "
");
while (($line = fgets($s)) !== false) {
    if ($line[0] === "+") { fwrite($s, "
"); continue; }
    if (str_starts_with($line, "a ")) { echo $line; break; }
}
"""


def _imap_from(container, token: str, user: str) -> str:
    """An IMAP XOAUTH2 login from inside `container` (its address, as Roundcube's logins arrive)."""
    import base64

    payload = base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()
    return exec_in(container, ["php", "-r", _IMAP_FROM, payload]).strip()


def test_failed_logins_from_one_address_never_delay_or_refuse_the_next_login(stack: Stack) -> None:
    """Every Roundcube user reaches Dovecot from Roundcube's one address: a burst of
    bad tokens from there must not slow the next user's login, nor make
    Postfix (which waits 10 s for Dovecot) answer 454."""
    for _ in range(5):
        assert _imap_from(stack.roundcube, "not-a-valid-token", ALICE).startswith("a NO"), stack.logs()
    assert _imap_from(stack.roundcube, TOKEN_OF[BOB], BOB).startswith("a OK"), stack.logs()
    # Dovecot keeps no penalty for the address, so nothing waits.
    assert exec_in(stack.dovecot, ["doveadm", "penalty"]).strip().splitlines()[1:] == []

    # The same burst from the host's address, then submission from that address.
    for _ in range(5):
        client = connect(stack, "webmail_submission")
        try:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.auth("XOAUTH2", xoauth2(ALICE, "not-a-valid-token"), initial_response_ok=True)
        finally:
            client.close()
    assert _auth_and_send(stack) == (235, b"2.7.0 Authentication successful"), stack.logs()
    assert exec_in(stack.dovecot, ["doveadm", "penalty"]).strip().splitlines()[1:] == []

"""DKIM, SPF and postscreen with the real daemons: OpenDKIM signs what the
submission ports accept, verifies what arrives on port 25, and Postfix records
the results in Authentication-Results.

DNS: Postfix and OpenDKIM resolve through the test zone's dnsmasq only
(daemon_harness.running_stack); dkimpy gets its TXT records through its
dnsfunc hook from the same records. No query leaves the test network.
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import uuid
from email.message import EmailMessage

import dkim
import pytest

from components.render import layout
from daemon_harness import ALICE, BOB, TOKEN_OF, Stack, exec_in
from test_postfix import _unverified, connect, delivered, xoauth2

PREGREET_PROBE = """
import socket, sys
sock = socket.create_connection(("postfix", 25), timeout=30)
sock.sendall(b"EHLO early.test\\r\\n")   # before the greeting is complete
answer = b""
try:
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
except ConnectionResetError:  # closed with our EHLO unread
    answer += b"[reset]"
sys.stdout.write(answer.decode(errors="replace"))
"""


def from_another_host(stack: Stack, script: str) -> str:
    """Runs a Python script in a new container on the stack's network: a client
    address Postfix has not seen (postscreen remembers clients that passed). The
    container keeps running, and so keeps its address, until the stack ends."""
    container = stack.resources.container(
        f"client-{uuid.uuid4().hex[:6]}", stack.dns.image.tags[0], {}, network=stack.network,
        entrypoint=["sleep", "900"],
    )
    return exec_in(container, ["python3", "-c", script])


def dnsfunc(stack: Stack):
    records = {name.lower(): value for name, value in stack.zone().items()}

    def lookup(name: bytes | str, timeout: int = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        return records.get(text.rstrip(".").lower(), "").encode()

    return lookup


def mail(sender: str, recipient: str, body: str = "A line of text.\n") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"] = sender, recipient
    message["Subject"] = f"rca dkim test {uuid.uuid4().hex}"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@test>"
    message.set_content(body)
    return message


def submit(stack: Stack, port_name: str, message: EmailMessage) -> None:
    client = connect(stack, port_name)
    try:
        sender = message["From"]
        code, answer = client.auth("XOAUTH2", xoauth2(sender, TOKEN_OF[sender]), initial_response_ok=True)
        assert code == 235, answer
        assert client.send_message(message) == {}
    finally:
        client.quit()


def read_delivered(stack: Stack, user: str, subject: str) -> bytes:
    path = delivered(stack, user, subject)
    return exec_in(stack.dovecot, ["cat", path]).encode()


def headers(raw: bytes, name: str) -> list[str]:
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    return [" ".join(str(value).split()) for value in parsed.get_all(name, [])]


def tamper_body(raw: bytes) -> bytes:
    end = min(i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0)
    body = raw[end:]
    assert b"A line of text." in body
    return raw[:end] + body.replace(b"A line of text.", b"A line of TEXT.")


@pytest.mark.parametrize("port_name", ["submission", "webmail_submission"])
def test_mail_from_a_submission_port_is_signed_and_verifies_against_the_published_record(
    stack: Stack, port_name: str
) -> None:
    message = mail(ALICE, BOB)
    submit(stack, port_name, message)
    raw = read_delivered(stack, BOB, message["Subject"])
    [signature] = headers(raw, "DKIM-Signature")
    settings = stack.variant.settings
    assert f"d={settings.mail_domain};" in signature and f"s={settings.dkim_selector};" in signature
    assert "a=rsa-sha256;" in signature and "c=relaxed/simple;" in signature
    assert dkim.verify(raw, dnsfunc=dnsfunc(stack)), raw.decode(errors="replace")
    assert not dkim.verify(tamper_body(raw), dnsfunc=dnsfunc(stack))
    # Signed, not verified: a submission gets no DKIM verdict of its own.
    assert not [h for h in headers(raw, "Authentication-Results") if "dkim=" in h]
    # OpenDKIM's syslog lines reach the container's log.
    logs = stack.opendkim.logs().decode(errors="replace")
    assert f"DKIM-Signature field added (s={settings.dkim_selector}, d={settings.mail_domain})" in logs, logs[-2000:]


def send_inbound(stack: Stack, raw: bytes, sender: str, recipient: str) -> None:
    client = connect(stack, "smtp")
    try:
        assert client.sendmail(sender, [recipient], raw) == {}
    finally:
        client.quit()


def signed_by_sender(stack: Stack, recipient: str, forged_results: bool = False) -> tuple[bytes, str]:
    sender = stack.sender
    message = mail(f"someone@{sender.domain}", recipient)
    if forged_results:
        message["Authentication-Results"] = f"{stack.variant.settings.host_name}; dkim=pass header.d=forged.test"
    raw = message.as_bytes(policy=email.policy.SMTP)
    signature = dkim.sign(
        raw, sender.selector.encode(), sender.domain.encode(), sender.private_pem,
        include_headers=[b"From", b"To", b"Subject", b"Message-ID"],
    )
    return signature + raw, message["Subject"]


def test_inbound_mail_with_a_valid_signature_gets_dkim_pass_and_spf_pass(stack: Stack) -> None:
    raw, subject = signed_by_sender(stack, ALICE, forged_results=True)
    send_inbound(stack, raw, f"someone@{stack.sender.domain}", ALICE)
    delivered_raw = read_delivered(stack, ALICE, subject)
    host = stack.variant.settings.host_name
    results = headers(delivered_raw, "Authentication-Results")
    dkim_results = [r for r in results if "dkim=" in r]
    assert len(dkim_results) == 1, results  # the forged one claiming our host is gone
    assert dkim_results[0].startswith(f"{host};") and "dkim=pass" in dkim_results[0], dkim_results
    assert f"header.d={stack.sender.domain}" in dkim_results[0]
    assert any(r.startswith(f"{host};") and "spf=pass" in r for r in results), results


def test_inbound_mail_whose_body_was_altered_gets_dkim_fail(stack: Stack) -> None:
    raw, subject = signed_by_sender(stack, ALICE)
    send_inbound(stack, tamper_body(raw), f"someone@{stack.sender.domain}", ALICE)
    results = [r for r in headers(read_delivered(stack, ALICE, subject), "Authentication-Results") if "dkim=" in r]
    assert len(results) == 1 and "dkim=fail" in results[0], results


def test_inbound_mail_from_an_address_the_senders_spf_excludes_is_refused(stack: Stack) -> None:
    """The sender domain's SPF allows only the host's connections; one from another host fails."""
    probe = f"""
import smtplib
client = smtplib.SMTP("postfix", 25, local_hostname="elsewhere.test", timeout=60)
try:
    client.sendmail("someone@{stack.sender.domain}", ["{ALICE}"], "Subject: spoofed\\r\\n\\r\\nhi\\r\\n")
    print("accepted")
except smtplib.SMTPRecipientsRefused as err:
    print("refused", err.recipients)
"""
    answer = from_another_host(stack, probe)
    assert answer.startswith("refused") and "550" in answer and "SPF" in answer, answer


def test_a_client_that_talks_before_the_greeting_is_dropped(stack: Stack) -> None:
    answer = from_another_host(stack, PREGREET_PROBE)
    assert answer.startswith("220-"), answer  # postscreen's first greeting line, then silence
    assert "250" not in answer, answer       # no EHLO answer: smtpd never saw this client
    logs = stack.postfix.logs().decode(errors="replace")
    [address] = re.findall(r"PREGREET \d+ after \S+ from \[([\d.]+)\]:\d+: EHLO early\.test", logs)
    assert f"DISCONNECT [{address}]" in logs and f"connect from unknown[{address}]" not in logs, logs[-3000:]


def test_every_container_of_the_stack_resolves_only_through_the_test_zone(stack: Stack) -> None:
    for container in (stack.postfix, stack.opendkim, stack.dovecot, stack.roundcube, stack.authentik):
        container.reload()
        assert container.attrs["HostConfig"]["Dns"] == [
            stack.dns.attrs["NetworkSettings"]["Networks"][stack.network.name]["IPAddress"]
        ]
    conf = exec_in(stack.opendkim, ["cat", layout.OPENDKIM_CONF])
    assert f"ResolverConfiguration {layout.OPENDKIM_UNBOUND_CONF}\n" in conf
    # Docker's resolver, which forwards to the zone only.
    assert "forward-addr: 127.0.0.11\n" in exec_in(stack.opendkim, ["cat", layout.OPENDKIM_UNBOUND_CONF])
    queries = stack.dns.logs().decode(errors="replace")
    assert f"query[TXT] {stack.sender.selector}._domainkey.{stack.sender.domain}" in queries, queries

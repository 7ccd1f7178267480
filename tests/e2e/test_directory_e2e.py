"""authentik is the mail directory, end to end: the deployed directory sync reads
the stand-in's users and groups (with the API token the program declares) and
the deployed Postfix and Dovecot follow it, every `directory.interval`.
"""

from __future__ import annotations

import smtplib
import time
import uuid
from typing import Callable, Iterator

import pytest
from playwright.sync_api import Browser

from tests.e2e import mailclients
from tests.e2e.environment import DIRECTORY_INTERVAL, LOOPBACK, MAIL_DOMAIN, MAIL_HOST, PORTS, STAFF_LIST, Stack
from tests.e2e.mailclients import LoginRefused
from tests.e2e.standin import client as idp
from tests.e2e.test_webmail import ALICE, BOB, CAROL, browser, imap, login_through_authentik, tokens, wait_for_inbox  # noqa: F401

pytestmark = pytest.mark.e2e

SYNC = ["/usr/local/bin/directory-sync", "/etc/roundcube-authentik/directory/sync.json"]
# A round runs every DIRECTORY_INTERVAL seconds; Dovecot looks at its file at most once a second.
ONE_ROUND = DIRECTORY_INTERVAL + 15


def rcpt(recipient: str) -> tuple[int, bytes]:
    """RCPT TO on the published port 25, as another mail server would send it."""
    with smtplib.SMTP(LOOPBACK, PORTS["smtp"], local_hostname="mx.elsewhere.example", timeout=30) as smtp:
        smtp.ehlo()
        smtp.mail("someone@elsewhere.example")
        return smtp.rcpt(recipient)


def until(what: str, check: Callable[[], bool], seconds: float = ONE_ROUND) -> None:
    """Bounded: the directory sync's next round (and Dovecot's next look at its file)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(1)


def subjects_in(stack: Stack, user: str) -> list[str]:
    session = imap(stack, user, tokens(stack, user)["access_token"])
    try:
        return mailclients.inbox_subjects(session)
    finally:
        session.logout()


def folder_subjects(stack: Stack, folder: str) -> str:
    """The mail stored in a mailbox folder on disk, whoever may log in."""
    path = f"/var/mail/{MAIL_DOMAIN}/{folder}/Maildir"
    return stack.deployment.container("dovecot").exec_run(["sh", "-c", f"cat {path}/new/* {path}/cur/* 2>/dev/null"]).output.decode()


def submit(stack: Stack, sender: str, recipient: str, subject: str) -> None:
    mailclients.smtp_submit(MAIL_HOST, PORTS["submission"], stack.ca_file, sender, tokens(stack, sender)["access_token"],
                            mailclients.message(sender, recipient, subject))


def auth_url(stack: Stack) -> str:
    return stack.where.auth_url


@pytest.fixture()
def restore_users(stack: Stack) -> Iterator[list[dict]]:
    """Users a test changes are put back as they were, and a round applies it."""
    changed: list[dict] = []
    yield changed
    for user in changed:
        idp.update_user(auth_url(stack), user["username"], verify=str(stack.ca_file),
                        **{k: v for k, v in user.items() if k != "username"})
    if changed:
        result = stack.deployment.container("directory").exec_run([*SYNC, "--once"])
        assert result.exit_code == 0, result.output.decode()


def test_an_unknown_recipient_is_refused_during_the_smtp_dialogue(stack: Stack) -> None:
    for recipient in (f"nobody@{MAIL_DOMAIN}", CAROL):  # Carol is not in the allowed group: no mailbox
        code, answer = rcpt(recipient)
        assert code == 550 and answer.startswith(b"5.1.1"), (recipient, code, answer)
    dovecot = stack.deployment.container("dovecot")
    assert dovecot.exec_run(["test", "-e", f"/var/mail/{MAIL_DOMAIN}/nobody"]).exit_code != 0


def test_an_alias_and_a_list_deliver_to_their_owners_inboxes(stack: Stack) -> None:
    alias, listed = (f"{what} {uuid.uuid4().hex[:8]}" for what in ("alias", "list"))
    submit(stack, BOB, f"al@{MAIL_DOMAIN}", alias)
    submit(stack, BOB, STAFF_LIST, listed)
    until("the alias's and the list's mail in Alice's inbox", lambda: {alias, listed} <= set(subjects_in(stack, ALICE)))
    until("the list's mail in Bob's inbox", lambda: listed in subjects_in(stack, BOB))


def test_the_quota_comes_from_authentik_and_a_malformed_attribute_is_skipped_with_one_line(stack: Stack) -> None:
    dovecot = stack.deployment.container("dovecot")
    quota = dovecot.exec_run(["doveadm", "quota", "get", "-u", f"frank@{MAIL_DOMAIN}"]).output.decode()
    assert " 1024 " in quota, quota  # mail_quota 1M, in KiB
    log = stack.logs("directory")
    skipped = [line for line in log.splitlines() if "frank" in line and "mail_aliases" in line]
    assert len(skipped) == 1 and "elsewhere.example" in skipped[0], log[-3000:]
    assert rcpt(f"frank@{MAIL_DOMAIN}")[0] == 250  # the rest of Frank stays


def test_deactivating_a_user_stops_mail_and_every_login_within_one_round_and_keeps_the_mail(
    stack: Stack, browser: Browser, restore_users: list[dict]  # noqa: F811
) -> None:
    kept = f"kept {uuid.uuid4().hex[:8]}"
    submit(stack, ALICE, BOB, kept)
    until("Bob's mail", lambda: kept in subjects_in(stack, BOB))
    token = tokens(stack, BOB)["access_token"]  # still valid for minutes after the deactivation
    context = browser.new_context()
    try:
        page = context.new_page()
        login_through_authentik(page, BOB)
        wait_for_inbox(page)

        restore_users.append({"username": "bob", "is_active": True})
        idp.update_user(auth_url(stack), "bob", verify=str(stack.ca_file), is_active=False)
        until("Bob refused at RCPT", lambda: rcpt(BOB)[0] == 550)
        until("Bob's IMAP login refused", lambda: _refused(lambda: imap(stack, BOB, token).logout()))
        with pytest.raises(LoginRefused):
            mailclients.smtp_submit(MAIL_HOST, PORTS["submission"], stack.ca_file, BOB, token,
                                    mailclients.message(BOB, ALICE, "after deactivation"))
        # Roundcube: his open session can no longer reach his mailbox.
        page.goto(stack.where.roundcube_url + "/?_task=mail&_mbox=INBOX")
        page.locator("#login-form, .oauth-login, a.button.oauth").or_(page.get_by_text("Login failed")).first.wait_for(
            timeout=30000)
        assert kept in folder_subjects(stack, "bob"), "a deactivated user's mail stays on disk"
    finally:
        context.close()


def _refused(login: Callable[[], None]) -> bool:
    try:
        login()
    except LoginRefused:
        return True
    return False


def test_authentik_down_keeps_delivery_working_and_the_sync_unhealthy(stack: Stack) -> None:
    sync = stack.deployment.container("directory")
    with stack.authentik_unreachable():
        failed = sync.exec_run([*SYNC, "--once"])
        assert failed.exit_code != 0, failed.output.decode()
        assert sync.exec_run([*SYNC, "--check"]).exit_code != 0, "the healthcheck shows authentik is unreachable"
        assert rcpt(ALICE)[0] == 250 and rcpt(f"al@{MAIL_DOMAIN}")[0] == 250
    assert sync.exec_run([*SYNC, "--once"]).exit_code == 0
    assert sync.exec_run([*SYNC, "--check"]).exit_code == 0


def test_a_changed_email_receives_within_one_round_and_keeps_the_mailbox(stack: Stack, restore_users: list[dict]) -> None:
    before = f"before the rename {uuid.uuid4().hex[:8]}"
    submit(stack, ALICE, f"heidi@{MAIL_DOMAIN}", before)
    until("Heidi's mail", lambda: before in folder_subjects(stack, "heidi"))
    restore_users.append({"username": "heidi", "email": f"heidi@{MAIL_DOMAIN}"})
    # Someone else's session, open while the directory changes, goes on (nothing is reloaded).
    alice = imap(stack, ALICE, tokens(stack, ALICE)["access_token"])
    renamed = f"heidi.renamed@{MAIL_DOMAIN}"
    idp.update_user(auth_url(stack), "heidi", verify=str(stack.ca_file), email=renamed)
    until("the new address accepted", lambda: rcpt(renamed)[0] == 250)
    try:
        assert alice.noop()[0] == "OK" and alice.select("INBOX")[0] == "OK"
    finally:
        alice.logout()
    assert rcpt(f"heidi@{MAIL_DOMAIN}")[0] == 550
    after = f"after the rename {uuid.uuid4().hex[:8]}"
    submit(stack, ALICE, renamed, after)
    # The same folder holds both: her mail followed her.
    until("the mail to the new address in Heidi's folder", lambda: after in folder_subjects(stack, "heidi"))
    assert before in folder_subjects(stack, "heidi")

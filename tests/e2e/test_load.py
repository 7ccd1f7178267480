"""Load, bounded and on loopback: 50 clients x 20 IMAP XOAUTH2 logins through
the published IMAPS port, each checked by authentik, with zero errors; every
container is healthy afterwards. Prints the rate (no timing assertion)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.e2e import mailclients
from tests.e2e.environment import ACCESS_TOKEN_SECONDS, AUTH_URL, LOAD_USERS, MAIL_HOST, PORTS, Stack
from tests.e2e.standin import client as idp

pytestmark = pytest.mark.e2e

CLIENTS = 50
LOGINS_PER_CLIENT = 20
DEADLINE_SECONDS = 300  # the whole run; far above what it takes


def test_fifty_clients_log_in_twenty_times_each_with_zero_errors_and_every_container_stays_healthy(stack: Stack) -> None:
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + DEADLINE_SECONDS

    def token_for(user: dict) -> str:
        # The stand-in (a small Flask server) is the test's, not what is measured:
        # a token request it is too busy to answer in time is asked again.
        for attempt in range(3):
            try:
                return idp.login_and_get_tokens(
                    AUTH_URL, stack.client_id, stack.client_secret, stack.redirect_uri,
                    user["username"], user["password"], verify=str(stack.ca_file),
                )["access_token"]
            except requests.exceptions.Timeout:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def client(user: dict) -> int:
        done = 0
        token, issued = token_for(user), time.monotonic()
        for _ in range(LOGINS_PER_CLIENT):
            if time.monotonic() > deadline:
                raise TimeoutError("load test deadline")
            if time.monotonic() - issued > ACCESS_TOKEN_SECONDS / 2:
                # Short e2e token lifetimes: a real client refreshes, this one asks again.
                token, issued = token_for(user), time.monotonic()
            try:
                session = mailclients.imap_login(MAIL_HOST, PORTS["imaps"], stack.ca_file, user["email"], token)
                status, _ = session.select("INBOX")
                session.logout()
                if status != "OK":
                    raise RuntimeError(f"SELECT INBOX answered {status}")
                done += 1
            except Exception as err:  # counted, not raised: the test reports them all
                with lock:
                    errors.append(f"{user['username']}: {type(err).__name__}: {err}")
        return done

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        done = sum(pool.map(client, LOAD_USERS[:CLIENTS]))
    elapsed = time.monotonic() - started
    finished_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    print(f"\n{done} IMAP XOAUTH2 logins by {CLIENTS} clients in {elapsed:.1f}s: {done / elapsed:.1f} logins/s")

    assert errors == [], f"{len(errors)} errors, first: {errors[:5]}"
    assert done == CLIENTS * LOGINS_PER_CLIENT
    for service in ("dovecot", "postfix", "roundcube"):
        # The healthchecks run every 30 s: wait for one that ran after the load.
        end = time.monotonic() + 90
        while True:
            state = stack.deployment.container(service).attrs["State"]
            if state["Health"]["Status"] == "healthy" and state["Health"]["Log"][-1]["End"] > finished_at:
                break
            assert time.monotonic() < end, f"{service}: {state['Health']}"
            time.sleep(2)
        assert state["Status"] == "running", service

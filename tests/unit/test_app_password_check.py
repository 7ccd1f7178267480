"""images/dovecot/app-password-check.py: the app-password checker Dovecot's Lua passdb
asks, run for real (its HTTP server on 127.0.0.1) against the authentik stand-in
over real HTTPS, with a directory.json in a temporary folder.

The script is imported from its path (it is a program in the Dovecot image, not a
package). Time for the cache and the throttle comes from a clock the tests turn;
the token's `exp` is real time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.e2e import pki
from tests.e2e.standin import client as idp
from tests.e2e.standin import make_server as make_standin

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "images" / "dovecot" / "app-password-check.py"
CLIENT_ID = "webmail-client"
CLIENT_SECRET = "webmail-secret:with%41special/+chars and spaces"
OTHER_CLIENT_ID = "other-client"
OTHER_SECRET = "other-secret-0123456789-0123456789-0123456789"
ALICE_APP_PASSWORD = "alice-app-password-0123456789-0123456789-0123456789-abcdefgh"
ALICE_EXPIRED_APP_PASSWORD = "alice-expired-app-password-0123456789-0123456789-0123456789"
ALICE_API_KEY = "alice-api-key-0123456789-0123456789-0123456789-0123456789-ab"
BOB_APP_PASSWORD = "bob-app-password-0123456789-0123456789-0123456789-abcdefghij"
CAROL_APP_PASSWORD = "carol-app-password-0123456789-0123456789-0123456789-abcdefg"
DAVE_APP_PASSWORD = "dave-app-password-0123456789-0123456789-0123456789-abcdefgh"
SECRETS = (ALICE_APP_PASSWORD, ALICE_EXPIRED_APP_PASSWORD, ALICE_API_KEY, BOB_APP_PASSWORD, CAROL_APP_PASSWORD,
           DAVE_APP_PASSWORD, CLIENT_SECRET, "alice-pw")
TOKEN_REQUEST = "POST /application/o/token/"


def _load_script():
    spec = importlib.util.spec_from_file_location("app_password_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["app_password_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


apc = _load_script()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the stand-in -------------------------------------------------------------------------------------


def standin_config(port: int, cert) -> dict[str, Any]:
    def provider(client_id: str, secret: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": client_id, "client_id": client_id, "client_secret": secret, "client_type": "confidential",
            "allowed_redirect_uris": [{"matching_mode": "strict", "url": "https://mail.example.test/cb"}],
            "scopes": ["openid", "email", "profile", "offline_access"],
            "access_code_validity": "minutes=1", "access_token_validity": "minutes=10",
            "refresh_token_validity": "days=30", "include_claims_in_id_token": True,
            "sub_mode": "hashed_user_id", "issuer_mode": "per_provider", "signing_key": True,
            "allowed_group": None, **extra,
        }

    def app_password(identifier: str, key: str, user: str, **extra: Any) -> dict[str, Any]:
        return {"identifier": identifier, "key": key, "user": user, "intent": "app_password", "expiring": False,
                **extra}

    return {
        "base_url": f"https://127.0.0.1:{port}",
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {"cert_file": str(cert.cert_file), "key_file": str(cert.key_file)},
        "users": [
            {"username": "alice", "email": "Alice@Example.test", "password": "alice-pw", "groups": ["webmail-users"]},
            {"username": "bob", "email": "bob@example.test", "password": "bob-pw", "groups": ["webmail-users"]},
            {"username": "carol", "email": "carol@example.test", "password": "carol-pw", "groups": ["staff"]},
            {"username": "dave", "email": "dave@example.test", "password": "dave-pw", "groups": ["webmail-users"]},
        ],
        "tokens": [
            app_password("alice-phone", ALICE_APP_PASSWORD, "alice"),
            app_password("alice-old-phone", ALICE_EXPIRED_APP_PASSWORD, "alice", expiring=True,
                         expires="2020-01-01T00:00:00Z"),
            {"identifier": "alice-api", "key": ALICE_API_KEY, "user": "alice", "intent": "api", "expiring": False},
            app_password("bob-phone", BOB_APP_PASSWORD, "bob"),
            app_password("carol-phone", CAROL_APP_PASSWORD, "carol"),
            app_password("dave-phone", DAVE_APP_PASSWORD, "dave"),
        ],
        "applications": [
            {"name": "Webmail", "slug": "webmail", "launch_url": None, "group": None,
             "provider": provider(CLIENT_ID, CLIENT_SECRET, allowed_group="webmail-users")},
            {"name": "Other", "slug": "other", "launch_url": None, "group": None,
             "provider": provider(OTHER_CLIENT_ID, OTHER_SECRET)},
        ],
    }


class Standin:
    def __init__(self, base_url: str, ca: str):
        self.base_url = base_url
        self.ca = ca
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def log(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def token_requests(self) -> int:
        with self._lock:
            return sum(line.startswith(TOKEN_REQUEST) for line in self.lines)

    def issuer(self, slug: str = "webmail") -> str:
        return f"{self.base_url}/application/o/{slug}/"


@pytest.fixture
def standin(tmp_path) -> Iterator[Standin]:
    ca = pki.TestCA(tmp_path / "pki")
    cert = ca.issue("127.0.0.1", "localhost")
    port = free_port()
    running = Standin(f"https://127.0.0.1:{port}", str(ca.ca_file))
    server = make_standin(standin_config(port, cert), log=running.log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- the checker ----------------------------------------------------------------------------------------


def directory_document(mailboxes: dict[str, str]) -> dict[str, Any]:
    """directory-sync's directory.json: address -> username (the other fields as the sync writes them)."""
    return {"version": 1, "lists": {}, "mailboxes": {
        address: {"username": username, "pk": index + 1, "quota": "5G", "aliases": []}
        for index, (address, username) in enumerate(mailboxes.items())}}


DIRECTORY = {"alice@example.test": "alice", "bob@example.test": "bob", "carol@example.test": "carol"}


def write_directory(path: Path, mailboxes: dict[str, str]) -> None:
    temporary = path.with_suffix(".new")
    temporary.write_text(json.dumps(directory_document(mailboxes)))
    os.replace(temporary, path)


class Clock:
    """time.monotonic for the checker's cache and throttle, turned by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Running:
    def __init__(self, url: str, clock: Clock, checker, directory: Path):
        self.url = url
        self.clock = clock
        self.checker = checker
        self.directory = directory

    def check(self, user: str, password: str, remote_ip: str = "192.0.2.7", secured: str = "TLS",
              protocol: str = "imap", mechanism: str = "PLAIN") -> tuple[int, str]:
        response = requests.post(self.url, data={"user": user, "password": password, "remote_ip": remote_ip,
                                                 "secured": secured, "protocol": protocol,
                                                 "mechanism": mechanism}, timeout=30)
        return response.status_code, response.text.strip()


def checker_config(tmp_path: Path, standin: Standin, **changes: Any) -> dict[str, Any]:
    document = {
        "listen_port": 8078,
        "token_url": f"{standin.base_url}/application/o/token/",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "ca_file": standin.ca,
        "issuers": [standin.issuer()],
        "directory_file": str(tmp_path / "directory.json"),
        "cache_seconds": 60,
        "scope": "openid email",
        "timeout": 5,
        "throttle_seconds": 300,
        "max_user_failures": 3,
        "max_address_failures": 5,
    }
    document.update(changes)
    return document


@contextlib.contextmanager
def serving(tmp_path: Path, standin: Standin, **changes: Any) -> Iterator[Running]:
    document = checker_config(tmp_path, standin, **changes)
    directory = Path(document["directory_file"])
    if not directory.exists():
        write_directory(directory, DIRECTORY)
    clock = Clock()
    checker = apc.Checker(apc.parse_config(document), clock=clock)
    server = apc.make_server(checker, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Running(f"http://127.0.0.1:{server.server_port}/check", clock, checker, directory)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def checker(tmp_path, standin) -> Iterator[Running]:
    with serving(tmp_path, standin) as running:
        yield running


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# -- the rules, through the HTTP endpoint --------------------------------------------------------------


def test_a_good_app_password_is_accepted_and_then_answered_from_the_cache(checker, standin, capsys):
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok authentik")
    assert standin.token_requests() == 1
    # The login name's case does not matter (Dovecot lower-cases it; authentik's email is Alice@Example.test).
    assert checker.check("Alice@Example.TEST", ALICE_APP_PASSWORD) == (200, "ok cached")
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD, remote_ip="198.51.100.1") == (200, "ok cached")
    assert standin.token_requests() == 1
    logs = capsys.readouterr().err
    assert "app-password: accepted user=<alice@example.test> rip=192.0.2.7 protocol=imap via=authentik" in logs
    assert "app-password: accepted user=<alice@example.test> rip=198.51.100.1 protocol=imap via=cache" in logs
    assert_no_secret(logs)


def test_the_cache_lasts_cache_seconds_from_the_call_to_authentik_not_from_the_last_hit(checker, standin):
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD)[0] == 200
    checker.clock.now += 59
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok cached")
    checker.clock.now += 1.5  # 60.5 s after the call: expired, although hit 1.5 s ago
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok authentik")
    assert standin.token_requests() == 2


def test_a_wrong_password_fails_and_is_not_cached(checker, standin, capsys):
    for _ in range(2):
        status, text = checker.check("alice@example.test", "not-my-app-password")
        assert (status, text) == (403, "fail wrong password (authentik: invalid_grant)")
    assert standin.token_requests() == 2  # each asked authentik again
    # A success cached for the right password does not make a wrong one succeed.
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD)[0] == 200
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD + "x")[0] == 403
    logs = capsys.readouterr().err
    assert ("app-password: refused user=<alice@example.test> rip=192.0.2.7 protocol=imap "
            "reason=wrong password (authentik: invalid_grant)") in logs
    assert "not-my-app-password" not in logs
    assert_no_secret(logs)


@pytest.mark.parametrize("password", ["alice-pw", ALICE_API_KEY, ALICE_EXPIRED_APP_PASSWORD, BOB_APP_PASSWORD],
                         ids=["login password", "API token", "expired app password", "another user's app password"])
def test_what_authentik_refuses_fails(checker, standin, password):
    assert checker.check("alice@example.test", password) == (403, "fail wrong password (authentik: invalid_grant)")
    assert standin.token_requests() == 1


def test_the_tokens_email_must_be_the_login_name(tmp_path, standin, capsys):
    """A stale directory that maps alice's address to bob: authentik accepts bob's app
    password for bob, but the token names bob@..., not the login name."""
    write_directory(tmp_path / "directory.json", {"alice@example.test": "bob"})
    with serving(tmp_path, standin) as checker:
        assert checker.check("alice@example.test", BOB_APP_PASSWORD) == (
            403, "fail the app password's user has another email")
        assert standin.token_requests() == 1
        assert checker.check("alice@example.test", BOB_APP_PASSWORD)[0] == 403  # not cached either
        assert standin.token_requests() == 2
    assert "reason=the app password's user has another email" in capsys.readouterr().err


def test_a_token_without_email_fails(tmp_path, standin):
    with serving(tmp_path, standin, scope="openid") as checker:
        status, text = checker.check("alice@example.test", ALICE_APP_PASSWORD)
    assert status == 403 and text.startswith("fail token without email")


def test_a_token_for_another_client_or_issuer_fails(tmp_path, standin):
    # Credentials of the other application: authentik answers with that client's token.
    with serving(tmp_path, standin, client_id=OTHER_CLIENT_ID, client_secret=OTHER_SECRET) as checker:
        assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (
            403, f"fail token issuer {standin.issuer('other')} not accepted")
    with serving(tmp_path, standin, client_id=OTHER_CLIENT_ID, client_secret=OTHER_SECRET,
                 issuers=[standin.issuer("other")]) as checker:
        assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok authentik")
    # The same token checked as if this process were another client: aud/azp do not match.
    authentik = apc.Authentik(apc.parse_config(checker_config(
        tmp_path, standin, client_id=OTHER_CLIENT_ID, client_secret=OTHER_SECRET,
        issuers=[standin.issuer("other"), standin.issuer()])), None)
    token = idp.app_password_token(standin.base_url, CLIENT_ID, CLIENT_SECRET, "alice", ALICE_APP_PASSWORD,
                                   verify=standin.ca)["access_token"]
    assert authentik._identity("alice@example.test", token) == apc.Answer("fail", "token of another client (aud/azp)")
    assert authentik._identity("alice@example.test", "not.a.jwt").verdict == "tempfail"


def test_a_user_outside_the_allowed_group_fails(checker, standin):
    # carol has a mailbox in this directory, but is not in the application's allowed group.
    assert checker.check("carol@example.test", CAROL_APP_PASSWORD) == (
        403, "fail wrong password (authentik: invalid_grant)")
    assert standin.token_requests() == 1
    assert any("carol is not in group 'webmail-users'" in line for line in standin.lines)


def test_a_user_not_in_the_directory_fails_without_asking_authentik(checker, standin, capsys):
    # dave's app password is good in authentik, but the directory has no mailbox for him.
    assert checker.check("dave@example.test", DAVE_APP_PASSWORD) == (403, "fail not a mailbox of the directory")
    assert standin.token_requests() == 0
    assert "refused user=<dave@example.test> rip=192.0.2.7 protocol=imap reason=not a mailbox of the directory" \
        in capsys.readouterr().err


def test_the_directory_is_read_again_when_it_changes(checker, standin):
    assert checker.check("dave@example.test", DAVE_APP_PASSWORD)[0] == 403
    write_directory(checker.directory, {**DIRECTORY, "dave@example.test": "dave"})
    assert checker.check("dave@example.test", DAVE_APP_PASSWORD) == (200, "ok authentik")
    # Removed from the directory: refused at once, whatever the cache holds.
    write_directory(checker.directory, DIRECTORY)
    assert checker.check("dave@example.test", DAVE_APP_PASSWORD) == (403, "fail not a mailbox of the directory")
    assert standin.token_requests() == 1


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"version": 2, "mailboxes": {}})],
                         ids=["missing", "not JSON", "another version"])
def test_an_unusable_directory_is_a_temporary_failure(checker, standin, content):
    if content is None:
        checker.directory.unlink()
    else:
        checker.directory.write_text(content)
    status, text = checker.check("alice@example.test", ALICE_APP_PASSWORD)
    assert status == 503 and text.startswith("tempfail directory unusable")
    assert standin.token_requests() == 0


def test_cleartext_is_disabled_and_postfix_tls_is_accepted(checker, standin, capsys):
    for secured in ("", "no", "tls"):
        assert checker.check("alice@example.test", ALICE_APP_PASSWORD, secured=secured) == (
            403, "disabled TLS required (cleartext connection)")
    assert standin.token_requests() == 0
    # Postfix sends `secured` (no value) for a TLS session: Dovecot says "secured".
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD, secured="secured", protocol="smtp") == (
        200, "ok authentik")
    assert "refused user=<alice@example.test> rip=192.0.2.7 protocol=imap reason=TLS required" \
        in capsys.readouterr().err


def test_a_deleted_app_password_works_until_the_cache_expires(checker, standin):
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok authentik")
    idp.delete_token(standin.base_url, "alice-phone", verify=standin.ca)
    checker.clock.now += 30
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok cached")
    checker.clock.now += 31
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (
        403, "fail wrong password (authentik: invalid_grant)")
    assert standin.token_requests() == 2


def test_a_deactivated_user_is_refused_after_the_cache_expires(checker, standin):
    assert checker.check("bob@example.test", BOB_APP_PASSWORD)[0] == 200
    idp.update_user(standin.base_url, "bob", verify=standin.ca, is_active=False)
    assert checker.check("bob@example.test", BOB_APP_PASSWORD) == (200, "ok cached")
    checker.clock.now += 61
    assert checker.check("bob@example.test", BOB_APP_PASSWORD)[0] == 403


def test_cache_seconds_zero_asks_authentik_every_time(tmp_path, standin):
    with serving(tmp_path, standin, cache_seconds=0) as checker:
        for _ in range(3):
            assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok authentik")
    assert standin.token_requests() == 3


def test_failures_for_a_user_from_an_address_are_throttled(checker, standin, capsys):
    for _ in range(3):  # max_user_failures
        assert checker.check("alice@example.test", "wrong")[1].startswith("fail wrong password")
    assert standin.token_requests() == 3
    # The limit is reached: refused without asking authentik, even with the right password.
    assert checker.check("alice@example.test", "wrong") == (
        403, "fail throttled (3 failures for this user from this address in 300 s)")
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD)[1].startswith("fail throttled")
    assert standin.token_requests() == 3
    # The same user from another address, and another user from this one, still get through.
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD, remote_ip="198.51.100.1") == (200, "ok authentik")
    assert checker.check("bob@example.test", BOB_APP_PASSWORD) == (200, "ok authentik")
    # Throttled attempts do not prolong it: once the failures leave the window, it is open again.
    checker.clock.now += 299
    assert checker.check("alice@example.test", "wrong")[1].startswith("fail throttled")
    checker.clock.now += 2
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (200, "ok authentik")
    logs = capsys.readouterr().err
    assert ("app-password: refused user=<alice@example.test> rip=192.0.2.7 protocol=imap "
            "reason=throttled (3 failures for this user from this address in 300 s)") in logs


def test_failures_from_an_address_are_throttled_across_users(checker, standin):
    """Password spraying: unknown users count too, and without asking authentik."""
    for name in ("x1", "x2", "x3", "x4"):
        assert checker.check(f"{name}@example.test", "guess", remote_ip="203.0.113.9")[0] == 403
    assert checker.check("bob@example.test", "guess", remote_ip="203.0.113.9")[1].startswith("fail wrong password")
    assert standin.token_requests() == 1
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD, remote_ip="203.0.113.9") == (
        403, "fail throttled (5 failures from this address in 300 s)")
    assert standin.token_requests() == 1
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD, remote_ip="203.0.113.10") == (200, "ok authentik")


def test_ipv6_addresses_are_throttled_per_64(checker, standin):
    for host in range(1, 6):
        assert checker.check(f"nobody{host}@example.test", "guess", remote_ip=f"2001:db8:1:2::{host}")[0] == 403
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD, remote_ip="2001:db8:1:2:ffff::1")[1] \
        .startswith("fail throttled (5 failures from this address")
    assert checker.check("alice@example.test", ALICE_APP_PASSWORD, remote_ip="2001:db8:1:3::1") == (
        200, "ok authentik")


def test_authentik_down_is_a_temporary_failure_and_not_a_throttled_failure(tmp_path, standin, capsys):
    closed = free_port()
    with serving(tmp_path, standin, token_url=f"https://127.0.0.1:{closed}/application/o/token/") as checker:
        for _ in range(5):
            status, text = checker.check("alice@example.test", ALICE_APP_PASSWORD)
            assert status == 503 and text.startswith("tempfail authentik unreachable")
    assert "app-password: tempfail user=<alice@example.test> rip=192.0.2.7 protocol=imap reason=authentik " \
           "unreachable" in capsys.readouterr().err
    # A certificate this process does not trust is no answer either.
    other_ca = pki.TestCA(tmp_path / "other-ca")
    with serving(tmp_path, standin, ca_file=str(other_ca.ca_file)) as checker:
        status, text = checker.check("alice@example.test", ALICE_APP_PASSWORD)
        assert status == 503 and "CERTIFICATE_VERIFY_FAILED" in text
    assert standin.token_requests() == 0
    # Other error answers (here: an unknown client) are temporary failures, not wrong passwords.
    with serving(tmp_path, standin, client_id="nobody") as checker:
        assert checker.check("alice@example.test", ALICE_APP_PASSWORD) == (
            503, "tempfail authentik answered HTTP 400 invalid_client")


def test_concurrent_checks_of_the_same_password_ask_authentik_once(checker, standin):
    results: list[tuple[int, str]] = []

    def one() -> None:
        results.append(checker.check("alice@example.test", ALICE_APP_PASSWORD))

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(status for status, _ in results) == [200] * 6
    assert sorted(text for _, text in results) == ["ok authentik"] + ["ok cached"] * 5
    assert standin.token_requests() == 1


def test_passwords_and_names_with_special_characters_arrive_intact(checker, standin, capsys):
    key = "p+a&s=s%20w o\u00f6rd/?#:"
    idp.add_token(standin.base_url, "alice-odd", key, "alice", verify=standin.ca, expiring=False)
    assert checker.check("alice@example.test", key) == (200, "ok authentik")
    # A name that could forge a log line is escaped.
    assert checker.check("eve@example.test> rip=10.0.0.1\nx", "p")[0] == 403
    logs = capsys.readouterr().err
    assert "user=<eve@example.test\\x3e\\x20rip=10.0.0.1\\x0ax> rip=192.0.2.7" in logs
    assert key not in logs and "p+a" not in logs


def test_malformed_requests(checker):
    assert requests.post(checker.url.replace("/check", "/other"), data={"user": "a"}, timeout=10).status_code == 404
    response = requests.post(checker.url, data={"password": "x"}, timeout=10)
    assert (response.status_code, response.text) == (400, "tempfail malformed request (no user)\n")
    response = requests.post(checker.url, data=b"user=a%40example.test&password=%ff&secured=TLS", timeout=10,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (response.status_code, response.text) == (403, "fail malformed request (not UTF-8)\n")
    response = requests.post(checker.url, data=b"x" * (apc.MAX_BODY + 1), timeout=10)
    assert response.status_code == 400
    status, text = checker.check("alice@example.test", "")
    assert (status, text) == (403, "fail empty or overlong password")


# -- settings -------------------------------------------------------------------------------------------


def test_config_parser_checks_every_key(tmp_path):
    base = {"token_url": "https://auth.example.test/application/o/token/", "client_id": "c",
            "client_secret": "s", "issuers": ["https://auth.example.test/application/o/webmail/"],
            "directory_file": "/d/directory.json"}
    config = apc.parse_config(base)
    assert (config.listen_port, config.cache_seconds, config.scope, config.timeout) == (8078, 60, "openid email", 10)
    assert (config.throttle_seconds, config.max_user_failures, config.max_address_failures) == (300, 10, 30)
    bad = [
        ({"colour": "blue"}, "unknown key"),
        ({"client_secret": ""}, "missing"),
        ({"token_url": "ftp://auth.example.test/"}, "token_url"),
        ({"token_url": "https://id:secret@auth.example.test/"}, "token_url"),
        ({"issuers": "https://auth.example.test/"}, "issuers"),
        ({"issuers": []}, "missing|issuers"),
        ({"listen_port": 70000}, "listen_port"),
        ({"cache_seconds": -1}, "cache_seconds"),
        ({"cache_seconds": "60"}, "cache_seconds"),
        ({"max_user_failures": 0}, "max_user_failures"),
        ({"max_address_failures": True}, "max_address_failures"),
        ({"timeout": 0}, "timeout"),
    ]
    for change, needle in bad:
        with pytest.raises(apc.ConfigError, match=needle):
            apc.parse_config({**base, **change})


# -- the command line -----------------------------------------------------------------------------------


def run_once(config_file: Path, user: str, password: str, remote_ip: str = "192.0.2.7"):
    return subprocess.run([sys.executable, str(SCRIPT), str(config_file), "--once", user, remote_ip],
                          input=password + "\n", capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder anyone may read (pytest's own temporary folders are root's alone): started
    as root, the script drops to nobody and must still read directory.json."""
    folder = Path(tempfile.mkdtemp(prefix="app-password-check-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_once_mode_answers_and_exits_0_1_2(open_folder, standin):
    tmp_path = open_folder
    write_directory(tmp_path / "directory.json", DIRECTORY)
    (tmp_path / "directory.json").chmod(0o644)
    config_file = tmp_path / "app-password-check.json"
    config_file.write_text(json.dumps(checker_config(tmp_path, standin)))
    config_file.chmod(0o600)
    good = run_once(config_file, "alice@example.test", ALICE_APP_PASSWORD)
    assert (good.returncode, good.stdout) == (0, "ok authentik\n")
    assert "accepted user=<alice@example.test> rip=192.0.2.7 protocol=once via=authentik" in good.stderr
    wrong = run_once(config_file, "alice@example.test", "wrong")
    assert (wrong.returncode, wrong.stdout) == (1, "fail wrong password (authentik: invalid_grant)\n")
    config_file.write_text(json.dumps(checker_config(tmp_path, standin, token_url="https://127.0.0.1:1/token/")))
    down = run_once(config_file, "alice@example.test", ALICE_APP_PASSWORD)
    assert down.returncode == 2 and down.stdout.startswith("tempfail authentik unreachable")
    for result in (good, wrong, down):
        assert_no_secret(result.stdout + result.stderr)
    config_file.write_text("{}")
    broken = run_once(config_file, "alice@example.test", "x")
    assert broken.returncode == 2 and "cannot start" in broken.stderr


def _pids_running(config_file: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(config_file).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def test_serve_mode_returns_once_listening_and_serves_in_the_background(open_folder, standin):
    folder = open_folder
    pids: list[int] = []
    try:
        write_directory(folder / "directory.json", DIRECTORY)
        (folder / "directory.json").chmod(0o644)
        port = free_port()
        config_file = folder / "app-password-check.json"
        config_file.write_text(json.dumps(checker_config(folder, standin, listen_port=port)))
        config_file.chmod(0o600)
        # Its log goes to a file, not a pipe: the server in the background keeps stderr open.
        with open(folder / "stderr", "w") as stderr:
            started = subprocess.run([sys.executable, str(SCRIPT), str(config_file)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=stderr, timeout=60, check=False)
        pids = _pids_running(config_file)
        assert started.returncode == 0, (folder / "stderr").read_text()
        assert f"listening on 127.0.0.1:{port}" in (folder / "stderr").read_text()
        assert len(pids) == 1
        # No wait: the port was open before the command returned.
        response = requests.post(f"http://127.0.0.1:{port}/check", timeout=30, data={
            "user": "alice@example.test", "password": ALICE_APP_PASSWORD, "remote_ip": "192.0.2.7",
            "secured": "TLS", "protocol": "imap", "mechanism": "PLAIN"})
        assert (response.status_code, response.text) == (200, "ok authentik\n")
        status = (Path("/proc") / str(pids[0]) / "status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
        if os.geteuid() == 0:  # started as root, it serves as nobody
            assert uids == ["65534"] * 4 and gids == ["65534"] * 4
        else:
            assert uids == [str(os.geteuid())] * 4
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

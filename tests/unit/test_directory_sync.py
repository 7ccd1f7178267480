"""images/postfix/directory-sync.py: attribute rules, folders, rendering, and the
fault rules end to end against the authentik stand-in over real HTTPS on 127.0.0.1.

The script is imported from its path (it is a program in the Postfix image, not
a package). Its maps are built by `postmap`: when this machine has no Postfix
(the usual case outside the image), a fake `postmap` goes first on PATH; it
insists on `-c <dir with main.cf>` as the real one does without
/etc/postfix/main.cf, and writes the map as JSON to `<source>.db`. The real
postmap is exercised in the Postfix image by the daemon tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.e2e import pki
from tests.e2e.standin import make_server
from tests.e2e.standin import client as idp

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "images" / "postfix" / "directory-sync.py"
DOMAIN = "example.test"
API_KEY = "directory-api-key-0123456789-0123456789-0123456789-0123456789"
ALICE_API_KEY = "alice-api-key-0123456789-0123456789-0123456789-0123456789-ab"
DIRECTORY_FILES = ("mailboxes", "mailboxes.db", "aliases", "aliases.db", "senders", "senders.db",
                   "dovecot-users", "directory.json", "state.json")


def _load_script():
    spec = importlib.util.spec_from_file_location("directory_sync", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["directory_sync"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ds = _load_script()

FAKE_POSTMAP = textwrap.dedent('''\
    #!{python}
    """Fake postmap for tests on a machine without Postfix: postmap [-c DIR] hash:FILE."""
    import json, os, sys
    args = sys.argv[1:]
    config_dir = "/etc/postfix"
    if args[:1] == ["-c"]:
        config_dir, args = args[1], args[2:]
    if not os.path.exists(os.path.join(config_dir, "main.cf")):
        sys.exit("postmap: fatal: open " + os.path.join(config_dir, "main.cf") + ": No such file or directory")
    (kind, _, source), = [a.partition(":") for a in args]
    assert kind == "hash", kind
    table = {{}}
    for line in open(source):
        key, value = line.split(None, 1)
        table[key] = value.strip()
    with open(source + ".db", "w") as out:
        json.dump(table, out)
''')


@pytest.fixture(scope="session")
def postmap_path(tmp_path_factory) -> Iterator[str]:
    """PATH with a postmap: the real one when installed, else the fake above."""
    if shutil.which("postmap") or Path("/usr/sbin/postmap").exists():
        yield os.environ["PATH"]
        return
    folder = tmp_path_factory.mktemp("fake-postmap")
    fake = folder / "postmap"
    fake.write_text(FAKE_POSTMAP.format(python=sys.executable))
    fake.chmod(0o755)
    yield f"{folder}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture(autouse=True)
def _postmap_on_path(postmap_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", postmap_path)


def config(output_dir: Path, **changes: Any):
    document: dict[str, Any] = {
        "api_url": "https://127.0.0.1:1", "token_file": str(output_dir.parent / "token"), "ca_file": None,
        "ca_dir": "/etc/ssl/certs", "mail_domain": DOMAIN, "allowed_group": None,
        "postmaster": f"alice@{DOMAIN}", "default_quota": "5G", "mail_dir": "/var/mail", "vmail_uid": 5000,
        "vmail_gid": 5000, "output_dir": str(output_dir), "interval": 60, "page_size": 2, "timeout": 5,
    }
    document.update(changes)
    return ds.parse_config(document)


def user(pk: int, username: str, email: str, *, active: bool = True, groups: tuple[str, ...] = (),
         **attributes: Any):
    return ds.user_from_record({"pk": pk, "username": username, "email": email, "is_active": active,
                                "groups": list(groups), "attributes": attributes}, "test")


def group(name: str, members: list[int], pk: str | None = None, **attributes: Any):
    return ds.group_from_record({"pk": pk or f"00000000-0000-0000-0000-{abs(hash(name)) % 10**12:012d}",
                                 "name": name, "users": members, "attributes": attributes}, "test")


# -- the CONFIG parser ----------------------------------------------------------------------------


def test_config_parser_checks_every_key(tmp_path):
    good = config(tmp_path / "out", mail_domain="Example.TEST", postmaster="Alice@EXAMPLE.test",
                  api_url="https://auth.example.test/")
    assert good.mail_domain == "example.test" and good.postmaster == "alice@example.test"
    assert good.api_url == "https://auth.example.test"
    assert config(tmp_path / "out", postmaster="Root@Elsewhere.Example").postmaster == "Root@elsewhere.example"
    base = {"api_url": "https://a.example", "token_file": "/t", "mail_domain": DOMAIN,
            "postmaster": f"p@{DOMAIN}", "output_dir": "/o"}
    assert ds.parse_config(base).page_size == 100 and ds.parse_config(base).interval == 60
    bad = [
        ({"colour": "blue"}, "unknown key"),
        ({"api_url": None}, "missing"),
        ({"api_url": "ftp://a.example"}, "api_url"),
        ({"api_url": "https://a.example/api"}, "api_url"),
        ({"mail_domain": "not a domain"}, "mail_domain"),
        ({"postmaster": "nobody"}, "postmaster"),
        ({"postmaster": f"a..b@{DOMAIN}"}, "postmaster"),
        ({"default_quota": "lots"}, "default_quota"),
        ({"default_quota": "5GB"}, "default_quota"),
        ({"page_size": 0}, "page_size"),
        ({"page_size": "100"}, "page_size"),
        ({"interval": True}, "interval"),
        ({"mail_dir": "relative/path"}, "mail_dir"),
        ({"mail_dir": "/var/mail with space"}, "mail_dir"),
        ({"vmail_uid": 0}, "vmail_uid"),
    ]
    for change, needle in bad:
        with pytest.raises(ds.ConfigError, match=needle):
            ds.parse_config({**base, **change})


# -- the attribute rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1M", "2G", "500M", "1T", "999999G"])
def test_quota_accepts_sizes(value):
    assert ds.parse_quota(value) == (value, "")


@pytest.mark.parametrize("value", ["lots", "0G", "05G", "2g", "2", "2GB", " 2G", "2G ", "1234567G", "", "-1G",
                                   2, 2.5, None, True, ["2G"], {"size": "2G"}])
def test_quota_refuses_everything_else(value):
    quota, why = ds.parse_quota(value)
    assert quota is None and why


def test_addresses_must_be_safe_and_in_the_domain():
    good = {"al@example.test": "al@example.test", "Al.Smith@EXAMPLE.TEST": "al.smith@example.test",
            "a_b+c-d@example.test": "a_b+c-d@example.test", " x@example.test ": "x@example.test"}
    for value, address in good.items():
        assert ds.address_in_domain(value, DOMAIN) == (address, "")
    for value in ("al@other.test", "al@sub.example.test", "al", "@example.test", ".al@example.test",
                  "al.@example.test", "a..l@example.test", "a l@example.test", "ä@example.test",
                  "a/b@example.test", "a%b@example.test", "a:b@example.test", "a,b@example.test",
                  "x" * 65 + "@example.test", 7, None, ["al@example.test"]):
        address, why = ds.address_in_domain(value, DOMAIN)
        assert address is None and why, value


def test_mailboxes_are_active_users_of_the_domain(tmp_path):
    cfg = config(tmp_path)
    people = [
        user(1, "alice", "Alice@Example.test"),
        user(2, "bob", "bob@other.test"),
        user(3, "carol", ".carol@example.test"),
        user(4, "dave", "dave@example.test", active=False),
        user(5, "eve", ""),
        user(6, "alice2", "ALICE@example.test"),  # same address as pk 1: the lower pk keeps it
        user(7, "abuser", "abuse@example.test"),  # reserved for the postmaster
        user(8, "frank", "frank@example.test"),
    ]
    directory = ds.build_directory(cfg, people, [], {})
    assert sorted(directory.mailboxes) == ["alice@example.test", "frank@example.test"]
    notes = "\n".join(directory.notes)
    assert "user 'bob' (pk 2): email 'bob@other.test' is not in example.test, no mailbox" in notes
    assert "user 'carol' (pk 3): email '.carol@example.test' has an unsafe local part, no mailbox" in notes
    assert "user 'eve' (pk 5): no email" in notes
    assert "user 'alice2' (pk 6): email alice@example.test is already the mailbox of user 'alice'" in notes
    assert "user 'abuser' (pk 7): email abuse@example.test is reserved" in notes
    assert "dave" not in notes  # inactive users are not mail users at all
    assert directory.aliases["postmaster@example.test"] == ["alice@example.test"]
    assert directory.aliases["abuse@example.test"] == ["alice@example.test"]
    assert directory.loud == []


def test_allowed_group_membership_is_checked_again(tmp_path):
    cfg = config(tmp_path, allowed_group="webmail-users")
    members = group("webmail-users", [1], pk="11111111-1111-1111-1111-111111111111")
    people = [user(1, "alice", "alice@example.test", groups=(members.pk,)), user(2, "bob", "bob@example.test")]
    directory = ds.build_directory(cfg, people, [members], {})
    assert list(directory.mailboxes) == ["alice@example.test"]
    assert "user 'bob' (pk 2): not a member of 'webmail-users', no mailbox" in directory.notes


def test_a_malformed_attribute_skips_that_entry_only(tmp_path):
    cfg = config(tmp_path)
    people = [
        user(1, "alice", "alice@example.test", mail_quota="lots",
             mail_aliases=["al@example.test", "al@other.test", 42, "a..l@example.test", "postmaster@example.test",
                           "alice@example.test", "bob@example.test", "al@example.test", "AL2@Example.Test"]),
        user(2, "bob", "bob@example.test", mail_quota="2G", mail_aliases="robert@example.test"),
        user(3, "carol", "carol@example.test", mail_aliases={"al": "carol@example.test"}, mail_quota=3),
        user(4, "dave", "dave@example.test", mail_aliases=["al@example.test", "dave2@example.test"]),
    ]
    directory = ds.build_directory(cfg, people, [], {})
    boxes = directory.mailboxes
    assert boxes["alice@example.test"].quota == "5G" and boxes["alice@example.test"].aliases == [
        "al@example.test", "al2@example.test"]
    assert boxes["bob@example.test"].quota == "2G" and boxes["bob@example.test"].aliases == ["robert@example.test"]
    assert boxes["carol@example.test"].quota == "5G" and boxes["carol@example.test"].aliases == []
    assert boxes["dave@example.test"].aliases == ["dave2@example.test"]
    expected = [  # mailboxes (and their quota) first, then aliases, by user pk
        "user 'alice' (pk 1): attribute mail_quota 'lots' is not a size like 2G (1-6 digits, then M, G or T); "
        "skipped, quota 5G",
        "user 'carol' (pk 3): attribute mail_quota 3 is not a size like 2G (1-6 digits, then M, G or T); "
        "skipped, quota 5G",
        "user 'alice' (pk 1): attribute mail_aliases entry 'al@other.test' is not in example.test; skipped",
        "user 'alice' (pk 1): attribute mail_aliases entry not a string (int); skipped",
        "user 'alice' (pk 1): attribute mail_aliases entry 'a..l@example.test' has an unsafe local part; skipped",
        "user 'alice' (pk 1): attribute mail_aliases entry postmaster@example.test is reserved for the postmaster; "
        "skipped",
        "user 'alice' (pk 1): attribute mail_aliases entry alice@example.test is the user's own mailbox; skipped",
        "user 'alice' (pk 1): attribute mail_aliases entry bob@example.test is the mailbox of user 'bob'; skipped",
        "user 'alice' (pk 1): attribute mail_aliases entry al@example.test is listed twice; skipped",
        "user 'carol' (pk 3): attribute mail_aliases not a list of addresses (dict); skipped",
        "user 'dave' (pk 4): attribute mail_aliases entry al@example.test is already an alias of user 'alice'; "
        "skipped",
    ]
    assert directory.notes == expected
    assert directory.skipped == len(expected)


def test_lists_deliver_to_members_with_a_mailbox(tmp_path):
    cfg = config(tmp_path)
    people = [user(1, "alice", "alice@example.test", mail_aliases=["team-lead@example.test"]),
              user(2, "bob", "bob@example.test"), user(3, "carol", "carol@other.test")]
    groups = [
        group("staff", [2, 1, 3, 99], mail_address="Staff@example.test"),
        group("b-other-domain", [1], mail_address="x@other.test"),
        group("c-mailbox", [1], mail_address="bob@example.test"),
        group("d-alias", [1], mail_address="team-lead@example.test"),
        group("e-reserved", [1], mail_address="abuse@example.test"),
        group("z-duplicate", [2], mail_address="staff@example.test"),  # after "staff" by name
        group("g-nobody", [3], mail_address="nobody-here@example.test"),
        group("h-not-a-string", [1], mail_address=["h@example.test"]),
        group("i-no-address", [1]),
    ]
    directory = ds.build_directory(cfg, people, groups, {})
    assert directory.lists == {"staff@example.test": ["alice@example.test", "bob@example.test"]}
    assert directory.aliases["staff@example.test"] == ["alice@example.test", "bob@example.test"]
    assert directory.notes == [  # users first, then groups by name
        "user 'carol' (pk 3): email 'carol@other.test' is not in example.test, no mailbox",
        "group 'b-other-domain': attribute mail_address 'x@other.test' is not in example.test; skipped",
        "group 'c-mailbox': attribute mail_address bob@example.test is the mailbox of user 'bob'; skipped",
        "group 'd-alias': attribute mail_address team-lead@example.test is already an alias of user 'alice'; "
        "skipped",
        "group 'e-reserved': attribute mail_address abuse@example.test is reserved for the postmaster; skipped",
        "group 'g-nobody': list nobody-here@example.test has no member with a mailbox; skipped",
        "group 'h-not-a-string': attribute mail_address not a string (list); skipped",
        "group 'z-duplicate': attribute mail_address staff@example.test is already the address of another group; "
        "skipped",
    ]
    assert "i-no-address" not in " ".join(directory.notes)


def test_lists_notes_come_after_the_users_notes(tmp_path):
    directory = ds.build_directory(config(tmp_path), [user(3, "carol", "carol@other.test")],
                                   [group("a", [3], mail_address="x@other.test")], {})
    assert [note.split(":")[0] for note in directory.notes] == ["user 'carol' (pk 3)", "group 'a'"]


def test_postmaster_is_loud_when_not_a_mailbox_but_still_gets_the_mail(tmp_path):
    directory = ds.build_directory(config(tmp_path, postmaster="root@elsewhere.example"),
                                   [user(1, "alice", "alice@example.test")], [], {})
    assert directory.aliases["postmaster@example.test"] == ["root@elsewhere.example"]
    assert directory.aliases["abuse@example.test"] == ["root@elsewhere.example"]
    assert directory.loud and "root@elsewhere.example is not a mailbox" in directory.loud[0]


def test_the_postmaster_may_own_postmaster_at(tmp_path):
    cfg = config(tmp_path, postmaster=f"postmaster@{DOMAIN}")
    directory = ds.build_directory(cfg, [user(1, "root", "postmaster@example.test")], [], {})
    assert list(directory.mailboxes) == ["postmaster@example.test"]
    assert "postmaster@example.test" not in directory.aliases
    assert directory.aliases["abuse@example.test"] == ["postmaster@example.test"]
    assert directory.loud == []


# -- folders ------------------------------------------------------------------------------------------


def test_first_sync_adopts_local_parts(tmp_path):
    people = [user(7, "bob", "Bob@example.test"), user(3, "alice", "alice.smith@example.test")]
    directory = ds.build_directory(config(tmp_path), people, [], {})
    assert directory.folders == {3: "alice.smith", 7: "bob"}
    assert directory.mailboxes["bob@example.test"].folder == "bob"


def test_a_changed_email_keeps_the_folder_and_a_reused_local_part_gets_the_pk(tmp_path):
    cfg = config(tmp_path)
    first = ds.build_directory(cfg, [user(3, "alice", "alice@example.test")], [], {})
    assert first.folders == {3: "alice"}
    # alice becomes alice.smith@; a new user (pk 9) gets alice@: the folder "alice" stays hers.
    second = ds.build_directory(cfg, [user(3, "alice", "alice.smith@example.test"),
                                      user(9, "alice2", "alice@example.test")], [], first.folders)
    assert second.mailboxes["alice.smith@example.test"].folder == "alice"
    assert second.mailboxes["alice@example.test"].folder == "alice.9"
    # A user who left keeps their folder reserved.
    third = ds.build_directory(cfg, [user(12, "newalice", "alice@example.test")], [], {3: "alice"})
    assert third.mailboxes["alice@example.test"].folder == "alice.12"
    assert third.folders == {3: "alice", 12: "alice.12"}
    # And when even <local>.<pk> is taken, a number follows.
    fourth = ds.build_directory(cfg, [user(12, "x", "alice@example.test")], [], {3: "alice", 4: "alice.12"})
    assert fourth.mailboxes["alice@example.test"].folder == "alice.12.2"


def test_state_round_trips_and_refuses_nonsense():
    folders = {3: "alice", 12: "alice.12"}
    assert ds.parse_state(ds.render_state(folders)) == folders
    for text in ('{"folders": {"x": "a"}}', '{"folders": {"1": "../etc"}}', '{"folders": {"1": ".hidden"}}',
                 '{"folders": []}', "[]", "not json"):
        with pytest.raises(ValueError):
            ds.parse_state(text)


# -- rendering -----------------------------------------------------------------------------------------


def test_rendered_files(tmp_path):
    cfg = config(tmp_path, default_quota="1G")
    people = [user(1, "alice", "alice@example.test", mail_aliases=["al@example.test"], mail_quota="2G"),
              user(2, "bob smith", "bob@example.test")]
    directory = ds.build_directory(cfg, people, [group("staff", [1, 2], mail_address="staff@example.test")],
                                   {2: "bob.old"})
    assert ds.render_mailboxes(directory) == "alice@example.test OK\nbob@example.test OK\n"
    assert ds.render_aliases(directory) == (
        "abuse@example.test alice@example.test\n"
        "al@example.test alice@example.test\n"
        "postmaster@example.test alice@example.test\n"
        "staff@example.test alice@example.test,bob@example.test\n"
    )
    assert ds.render_senders(directory) == (
        "al@example.test alice@example.test\n"
        "alice@example.test alice@example.test\n"
        "bob@example.test bob@example.test\n"
    )
    assert ds.render_dovecot_users(cfg, directory) == (
        "alice@example.test:{CRYPT}*:5000:5000::/var/mail/example.test/alice::"
        "userdb_quota_storage_size=2G authentik_username=alice\n"
        # A username with a space cannot be a passwd-file extra field: left out.
        "bob@example.test:{CRYPT}*:5000:5000::/var/mail/example.test/bob.old::userdb_quota_storage_size=1G\n"
    )
    assert json.loads(ds.render_directory_json(directory)) == {
        "version": 1,
        "mailboxes": {
            "alice@example.test": {"username": "alice", "pk": 1, "quota": "2G", "aliases": ["al@example.test"]},
            "bob@example.test": {"username": "bob smith", "pk": 2, "quota": "1G", "aliases": []},
        },
        "lists": {"staff@example.test": ["alice@example.test", "bob@example.test"]},
    }


# -- reading pages --------------------------------------------------------------------------------------


def pages_getter(pages: dict[int, Any], status: int = 200):
    asked: list[str] = []

    def get(target: str):
        asked.append(target)
        number = int(target.split("page=")[1].split("&")[0])
        return status, pages[number]

    get.asked = asked  # type: ignore[attr-defined]
    return get


def page(number: int, next_page: int, count: int, pks: list[int]) -> dict[str, Any]:
    return {"pagination": {"next": next_page, "previous": number - 1, "count": count, "current": number,
                           "total_pages": 0, "start_index": 0, "end_index": 0},
            "results": [{"pk": pk} for pk in pks], "autocomplete": {}}


def test_read_pages_follows_next_whatever_the_page_size():
    get = pages_getter({1: page(1, 2, 5, [1, 2]), 2: page(2, 3, 5, [3, 4]), 3: page(3, 0, 5, [5])})
    results = ds.read_pages(get, "/api/v3/core/users/", {"is_active": "true"}, 100)
    assert [r["pk"] for r in results] == [1, 2, 3, 4, 5]
    assert get.asked[0] == "/api/v3/core/users/?is_active=true&page=1&page_size=100"
    assert len(get.asked) == 3


@pytest.mark.parametrize("pages, needle", [
    ({1: page(1, 2, 4, [1, 2]), 2: page(2, 0, 4, [3])}, "paging cut off: 3 results, but authentik counted 4"),
    ({1: page(1, 3, 4, [1, 2]), 3: page(3, 0, 4, [3, 4])}, "a missing or repeated page"),
    ({1: page(1, 2, 4, [1, 2]), 2: page(2, 0, 4, [1, 2])}, "seen before"),
    ({1: page(1, 2, 4, [1, 2]), 2: page(1, 0, 4, [3, 4])}, "asked for page 2, got page 1"),
    ({1: page(1, 2, 4, [1, 2]), 2: page(2, 0, 5, [3, 4])}, "count changed from 4 to 5"),
    ({1: page(1, 2, 4, []), 2: page(2, 0, 4, [1, 2])}, "an empty page 1 before the last"),
    ({1: page(1, 0, 1, [1, 2])}, "2 results so far but count is 1"),
    ({1: {"results": []}}, "not authentik's paging shape"),
    ({1: [1, 2]}, "not authentik's paging shape"),
    ({1: {"pagination": {"next": "2", "count": 1, "current": 1}, "results": []}}, "lacks next/count/current"),
    ({1: {"pagination": {"next": 0, "count": 1, "current": 1}, "results": [{"name": "no pk"}]}}, "without pk"),
])
def test_read_pages_fails_the_round_when_the_pages_do_not_add_up(pages, needle):
    with pytest.raises(ds.RoundFailed, match=needle.replace("(", r"\(").replace(")", r"\)")):
        ds.read_pages(pages_getter(pages), "/api/v3/core/users/", {}, 2)


def test_read_pages_names_the_refusal():
    with pytest.raises(ds.RoundFailed, match=r"HTTP 403 \(Token invalid/expired\): the token is unknown"):
        ds.read_pages(pages_getter({1: {"detail": "Token invalid/expired"}}, status=403), "/x/", {}, 2)
    with pytest.raises(ds.RoundFailed, match="HTTP 502: authentik failed"):
        ds.read_pages(pages_getter({1: None}, status=502), "/x/", {}, 2)


# -- the healthcheck ---------------------------------------------------------------------------------------


def test_check_reads_the_status(tmp_path):
    cfg = config(tmp_path, interval=10)
    assert ds.check(cfg) == (False, f"no round has finished yet ({tmp_path / 'status.json'} is missing)")
    now = 1_000_000.0
    status = {"outcome": "ok", "last_success_unix": now - 30, "counts": {"mailboxes": 3}}
    (tmp_path / "status.json").write_text(json.dumps(status))
    healthy, why = ds.check(cfg, now)
    assert healthy and "3 mailboxes" in why
    assert ds.check(cfg, now + 40)[0] is False  # 70 s > max(3 x 10 s, 60 s)
    assert ds.check(config(tmp_path, interval=60), now + 100)[0] is True  # 130 s < 180 s
    (tmp_path / "status.json").write_text(json.dumps({**status, "outcome": "refused", "reason": "empty"}))
    assert ds.check(cfg, now) == (False, "the last round was refused: empty")


# -- against the stand-in over HTTPS -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def directory_standin_config(port: int, cert, users: list[dict[str, Any]] | None = None,
                             groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "base_url": f"https://127.0.0.1:{port}",
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {"cert_file": str(cert.cert_file), "key_file": str(cert.key_file)},
        "users": users if users is not None else [
            {"username": "alice", "email": "alice@example.test", "password": "x", "groups": ["webmail-users"],
             "attributes": {"mail_aliases": ["al@example.test"], "mail_quota": "2G"}},
            {"username": "bob", "email": "Bob@Example.test", "password": "x", "groups": ["webmail-users", "staff"]},
            {"username": "carol", "email": "carol@example.test", "password": "x", "groups": ["staff"]},
            {"username": "dave", "email": "dave@elsewhere.example", "password": "x", "groups": ["staff"]},
            {"username": "eve", "email": "eve@example.test", "password": "x", "is_active": False},
            {"username": "svc-directory", "password": "x", "type": "service_account",
             "groups": ["directory-readers"]},
        ],
        "roles": [{"name": "directory-reader",
                   "permissions": ["authentik_core.view_user", "authentik_core.view_group"]}],
        "groups": (groups or []) + [
            {"name": "directory-readers", "roles": ["directory-reader"]},
            {"name": "staff", "attributes": {"mail_address": "staff@example.test"}},
        ],
        "tokens": [
            {"identifier": "directory", "key": API_KEY, "user": "svc-directory", "intent": "api", "expiring": False},
            {"identifier": "alice-api", "key": ALICE_API_KEY, "user": "alice", "intent": "api", "expiring": False},
        ],
    }


class Standin:
    def __init__(self, base_url: str, ca: str):
        self.base_url = base_url
        self.ca = ca
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


@contextlib.contextmanager
def serve_standin(tmp_path: Path, **kwargs: Any) -> Iterator[Standin]:
    ca = pki.TestCA(tmp_path / "pki")
    cert = ca.issue("127.0.0.1", "localhost")
    port = free_port()
    running = Standin(f"https://127.0.0.1:{port}", str(ca.ca_file))
    server = make_server(directory_standin_config(port, cert, **kwargs), log=running.log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def standin(tmp_path) -> Iterator[Standin]:
    with serve_standin(tmp_path) as running:
        yield running


@pytest.fixture
def sync_config(tmp_path, standin):
    (tmp_path / "token").write_text(API_KEY + "\n")
    return config(tmp_path / "out", api_url=standin.base_url, ca_file=standin.ca)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Content, mtime (ns) and inode of every directory file present."""
    found = {}
    for name in DIRECTORY_FILES:
        path = folder / name
        if path.exists():
            info = path.stat()
            found[name] = (path.read_bytes(), info.st_mtime_ns, info.st_ino)
    return found


def test_a_sync_writes_the_directory(sync_config, capsys):
    outcome = ds.Syncer(sync_config).round()
    assert outcome.outcome == "ok", outcome.reason
    out = Path(sync_config.output_dir)
    assert (out / "mailboxes").read_text() == (
        "alice@example.test OK\nbob@example.test OK\ncarol@example.test OK\n")
    assert (out / "aliases").read_text() == (
        "abuse@example.test alice@example.test\n"
        "al@example.test alice@example.test\n"
        "postmaster@example.test alice@example.test\n"
        "staff@example.test bob@example.test,carol@example.test\n")
    assert (out / "senders").read_text() == (
        "al@example.test alice@example.test\nalice@example.test alice@example.test\n"
        "bob@example.test bob@example.test\ncarol@example.test carol@example.test\n")
    assert (out / "dovecot-users").read_text().splitlines()[0] == (
        "alice@example.test:{CRYPT}*:5000:5000::/var/mail/example.test/alice::"
        "userdb_quota_storage_size=2G authentik_username=alice")
    directory = json.loads((out / "directory.json").read_text())
    assert directory["mailboxes"]["bob@example.test"] == {"username": "bob", "pk": 2, "quota": "5G", "aliases": []}
    assert directory["lists"] == {"staff@example.test": ["bob@example.test", "carol@example.test"]}
    assert json.loads((out / "state.json").read_text())["folders"] == {"1": "alice", "2": "bob", "3": "carol"}
    for name in ("mailboxes", "aliases", "senders"):
        assert (out / f"{name}.db").exists()
    # postmap's own empty main.cf, old enough that Postfix does not wait for it to "settle".
    assert (out / ".postmap" / "main.cf").stat().st_mtime == 0
    if "fake-postmap" in os.environ["PATH"]:
        assert json.loads((out / "aliases.db").read_text())["staff@example.test"] == \
            "bob@example.test,carol@example.test"
    for name in (*DIRECTORY_FILES, "status.json"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert not list(out.glob(".new-*"))
    status = json.loads((out / "status.json").read_text())
    assert status["outcome"] == "ok" and status["reason"] is None and status["last_success"]
    assert status["counts"] == {"users": 5, "groups": 3, "mailboxes": 3, "aliases": 1, "lists": 1, "skipped": 2}
    # Pages of 2: groups 2 requests, (active) users 5 -> 3 requests.
    assert status["requests"] == 5 == outcome.requests
    err = capsys.readouterr().err
    assert "directory-sync: skipped: user 'dave' (pk 4): email 'dave@elsewhere.example' is not in example.test" in err
    assert "directory-sync: directory changed: wrote state.json, mailboxes(.db), aliases(.db), senders(.db), " \
           "dovecot-users, directory.json; 3 mailboxes, 1 aliases, 1 lists, 2 skipped entries" in err
    assert API_KEY not in err
    assert ds.check(sync_config)[0] is True


def test_an_unchanged_directory_rewrites_nothing(sync_config, capsys):
    syncer = ds.Syncer(sync_config)
    assert syncer.round().ok
    out = Path(sync_config.output_dir)
    before = snapshot(out)
    capsys.readouterr()
    time.sleep(0.05)
    outcome = syncer.round()
    assert outcome.ok and outcome.written == []
    assert snapshot(out) == before
    assert capsys.readouterr().err == ""  # nothing new to say
    assert json.loads((out / "status.json").read_text())["written"] == []
    # A fresh process (a restarted container) says once that all is current, still writing nothing.
    assert ds.Syncer(sync_config).round().written == []
    assert "directory current, nothing to write" in capsys.readouterr().err
    assert snapshot(out) == before


def test_a_map_db_that_went_missing_is_rebuilt(sync_config):
    assert ds.Syncer(sync_config).round().ok
    out = Path(sync_config.output_dir)
    (out / "senders.db").unlink()
    outcome = ds.Syncer(sync_config).round()
    assert outcome.written == ["senders"] and (out / "senders.db").exists()


@pytest.mark.parametrize("fault, needle", [
    ("down", "connection lost|Connection reset|EOF|SSL"),
    ("error", "HTTP 500: authentik failed"),
    ("cut-paging", "paging cut off"),
])
def test_authentik_faults_keep_the_last_good_copy(sync_config, standin, capsys, fault, needle):
    syncer = ds.Syncer(sync_config)
    assert syncer.round().ok
    out = Path(sync_config.output_dir)
    before = snapshot(out)
    idp.update_user(standin.base_url, "carol", verify=standin.ca, is_active=False)  # a change it must not apply
    idp.set_directory_fault(standin.base_url, fault, verify=standin.ca)
    capsys.readouterr()
    outcome = syncer.round()
    assert outcome.outcome == "failed"
    assert snapshot(out) == before
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("directory-sync:")]
    assert len(lines) == 1 and "round failed, the directory on disk stays as it was" in lines[0]
    assert re.search(needle, lines[0]), lines[0]
    status = json.loads((out / "status.json").read_text())
    assert status["outcome"] == "failed" and re.search(needle, status["reason"])
    assert status["last_success"] is not None
    healthy, why = ds.check(sync_config)
    assert not healthy and "failed" in why
    # authentik back: the pending change is applied.
    idp.set_directory_fault(standin.base_url, "none", verify=standin.ca)
    outcome = syncer.round()
    assert outcome.ok and "mailboxes" in outcome.written
    assert "carol@example.test" not in (out / "mailboxes").read_text()
    assert ds.check(sync_config)[0] is True


def test_authentik_down_entirely(sync_config, tmp_path):
    assert ds.Syncer(sync_config).round().ok
    out = Path(sync_config.output_dir)
    before = snapshot(out)
    gone = config(out, api_url=f"https://127.0.0.1:{free_port()}", ca_file=sync_config.ca_file,
                  token_file=sync_config.token_file)
    outcome = ds.Syncer(gone).round()
    assert outcome.outcome == "failed" and "ConnectionRefusedError" in outcome.reason
    assert snapshot(out) == before


@pytest.mark.parametrize("how, detail", [
    ("revoked", "Token invalid/expired"),
    ("without permission", "You do not have permission to perform this action."),
    ("unreadable", None),
])
def test_a_refused_token_keeps_the_last_good_copy(sync_config, standin, how, detail):
    syncer = ds.Syncer(sync_config)
    assert syncer.round().ok
    out = Path(sync_config.output_dir)
    before = snapshot(out)
    if how == "revoked":
        idp.delete_token(standin.base_url, "directory", verify=standin.ca)
    elif how == "without permission":
        Path(sync_config.token_file).write_text(ALICE_API_KEY)  # a rotated file is read next round
    else:
        Path(sync_config.token_file).unlink()
    outcome = syncer.round()
    assert outcome.outcome == "failed"
    if detail:
        assert f"HTTP 403 ({detail})" in outcome.reason
    else:
        assert "cannot read the API token" in outcome.reason
    assert API_KEY not in outcome.reason and ALICE_API_KEY not in outcome.reason
    assert snapshot(out) == before


def test_zero_mailboxes_over_a_full_directory_is_refused_until_allowed(sync_config, standin, capsys):
    syncer = ds.Syncer(sync_config)
    assert syncer.round().ok
    out = Path(sync_config.output_dir)
    before = snapshot(out)
    for name in ("alice", "bob", "carol"):
        idp.update_user(standin.base_url, name, verify=standin.ca, is_active=False)
    capsys.readouterr()
    for _ in range(2):  # loud every round
        outcome = syncer.round()
        assert outcome.outcome == "refused"
        assert snapshot(out) == before
        err = capsys.readouterr().err
        assert "directory-sync: REFUSED: authentik's answer has no mailbox but the directory on disk has 3" in err
        assert str(out / "allow-empty") in err
    status = json.loads((out / "status.json").read_text())
    assert status["outcome"] == "refused" and status["counts"]["mailboxes"] == 0
    healthy, why = ds.check(sync_config)
    assert not healthy and why.startswith("the last round was refused")
    # The operator's one-time permission.
    (out / "allow-empty").touch()
    outcome = syncer.round()
    assert outcome.ok
    assert (out / "mailboxes").read_text() == "" and (out / "dovecot-users").read_text() == ""
    assert not (out / "allow-empty").exists()
    assert "applied an EMPTY directory over 3 mailboxes" in capsys.readouterr().err
    assert json.loads((out / "state.json").read_text())["folders"] == {"1": "alice", "2": "bob", "3": "carol"}


def test_changes_in_authentik_reach_the_files(sync_config, standin, capsys):
    syncer = ds.Syncer(sync_config)
    assert syncer.round().ok
    out = Path(sync_config.output_dir)
    # A malformed attribute: that entry only is skipped, with one line naming user and attribute.
    idp.update_user(standin.base_url, "alice", verify=standin.ca,
                    attributes={"mail_quota": "lots", "mail_aliases": ["al@example.test", "x@other.test"]})
    # bob changes address: same folder.
    idp.update_user(standin.base_url, "bob", verify=standin.ca, email="robert@example.test")
    # A new user takes bob's old local part: bob.<pk>.
    idp.add_user(standin.base_url, {"username": "bob2", "password": "x", "email": "bob@example.test", "pk": 40},
                 verify=standin.ca)
    capsys.readouterr()
    outcome = syncer.round()
    assert outcome.ok
    err = capsys.readouterr().err
    assert "skipped: user 'alice' (pk 1): attribute mail_quota 'lots' is not a size" in err
    assert "skipped: user 'alice' (pk 1): attribute mail_aliases entry 'x@other.test' is not in example.test" in err
    users = (out / "dovecot-users").read_text()
    assert "alice@example.test:{CRYPT}*:5000:5000::/var/mail/example.test/alice::userdb_quota_storage_size=5G" \
        in users
    assert "robert@example.test:{CRYPT}*:5000:5000::/var/mail/example.test/bob::" in users
    assert "bob@example.test:{CRYPT}*:5000:5000::/var/mail/example.test/bob.40::" in users
    assert "al@example.test alice@example.test" in (out / "aliases").read_text()
    # The same skip is not logged again while it stays the same.
    capsys.readouterr()
    assert syncer.round().written == []
    assert capsys.readouterr().err == ""


def test_dovecot_sees_a_same_size_change_within_one_second(sync_config, standin):
    """Dovecot re-reads a passwd-file when mtime (whole seconds) or size changes."""
    syncer = ds.Syncer(sync_config)
    assert syncer.round().ok
    users = Path(sync_config.output_dir) / "dovecot-users"
    before = users.stat()
    idp.update_user(standin.base_url, "alice", verify=standin.ca,
                    attributes={"mail_aliases": ["al@example.test"], "mail_quota": "3G"})
    assert "dovecot-users" in syncer.round().written
    after = users.stat()
    assert after.st_size == before.st_size
    assert int(after.st_mtime) != int(before.st_mtime)


def test_a_same_size_file_from_the_same_second_gets_a_later_mtime(tmp_path):
    old, new = tmp_path / "dovecot-users", tmp_path / ".new-dovecot-users"
    old.write_text("quota=2G\n")
    new.write_text("quota=3G\n")
    second = int(time.time())
    os.utime(old, (second + 0.2, second + 0.2))
    os.utime(new, (second + 0.7, second + 0.7))
    ds.Output._keep_mtime_distinct(old, new)
    assert int(new.stat().st_mtime) == second + 1
    # Another size, or another second: left alone.
    new.write_text("quota=30G\n")
    os.utime(new, (second + 0.7, second + 0.7))
    ds.Output._keep_mtime_distinct(old, new)
    assert int(new.stat().st_mtime) == second


def test_allowed_group_limits_the_mailboxes(tmp_path, capsys):
    with serve_standin(tmp_path, groups=[{"name": "webmail-users"}]) as standin:
        (tmp_path / "token").write_text(API_KEY)
        cfg = config(tmp_path / "out", api_url=standin.base_url, ca_file=standin.ca, allowed_group="webmail-users")
        outcome = ds.Syncer(cfg).round()
        assert outcome.ok, outcome.reason
        assert (tmp_path / "out" / "mailboxes").read_text() == "alice@example.test OK\nbob@example.test OK\n"
        # carol is in staff but not in webmail-users: the list has bob only.
        assert json.loads((tmp_path / "out" / "directory.json").read_text())["lists"] == {
            "staff@example.test": ["bob@example.test"]}
        assert any("groups_by_name=['webmail-users']" in line for line in standin.lines)
        missing = config(tmp_path / "out", api_url=standin.base_url, ca_file=standin.ca, allowed_group="nope")
        outcome = ds.Syncer(missing).round()
        assert outcome.outcome == "failed" and "allowed_group 'nope' is not a group in authentik" in outcome.reason


def test_a_broken_state_file_fails_the_round_and_is_kept(sync_config):
    assert ds.Syncer(sync_config).round().ok
    state = Path(sync_config.output_dir) / "state.json"
    state.write_text("{broken")
    outcome = ds.Syncer(sync_config).round()
    assert outcome.outcome == "failed" and "state.json is unreadable" in outcome.reason
    assert state.read_text() == "{broken"


# -- the program, as the container runs it ------------------------------------------------------------


def run_script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def write_config(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "directory-sync.json"
    document = {key: getattr(cfg, key) for key in cfg.__dataclass_fields__}
    path.write_text(json.dumps(document))
    return path


def test_command_line_once_and_check(sync_config, standin, tmp_path):
    path = write_config(tmp_path, sync_config)
    check = run_script(str(path), "--check")
    assert check.returncode == 1 and check.stdout.startswith("unhealthy: no round has finished yet")
    once = run_script(str(path), "--once")
    assert once.returncode == 0, once.stderr
    assert "directory changed: wrote" in once.stderr and API_KEY not in once.stderr + once.stdout
    check = run_script(str(path), "--check")
    assert check.returncode == 0 and check.stdout.startswith("ok: last successful round")
    idp.set_directory_fault(standin.base_url, "error", verify=standin.ca)
    once = run_script(str(path), "--once")
    assert once.returncode == 1 and "round failed" in once.stderr
    check = run_script(str(path), "--check")
    assert check.returncode == 1 and "the last round was failed" in check.stdout
    assert len(check.stdout.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert run_script(str(bad), "--once").returncode == 2
    assert run_script(str(bad), "--check").returncode == 1
    assert run_script(str(path), "--bogus").returncode == 2


def test_command_line_loop_syncs_until_sigterm(sync_config, standin, tmp_path):
    path = write_config(tmp_path, ds.Config(**{**sync_config.__dict__, "interval": 1}))
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(path)], stderr=subprocess.PIPE, text=True)
    try:
        status = Path(sync_config.output_dir) / "status.json"
        deadline = time.monotonic() + 30
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        idp.update_user(standin.base_url, "carol", verify=standin.ca, is_active=False)
        mailboxes = Path(sync_config.output_dir) / "mailboxes"
        while "carol" in mailboxes.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "carol" not in mailboxes.read_text()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert err.splitlines()[0].startswith("directory-sync: started:")
    assert err.rstrip().endswith("directory-sync: stopped")
    assert API_KEY not in err

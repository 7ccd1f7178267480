#!/usr/bin/python3
"""Makes authentik the mail directory: who has a mailbox, aliases, lists, quota.

Every `interval` seconds it reads authentik's users and groups through the
REST API (`/api/v3/core/users/`, `/api/v3/core/groups/`, in pages, never one
request per user or group) with an API token, and writes, in `output_dir`:

    mailboxes, mailboxes.db   Postfix virtual_mailbox_maps     `<address> OK`
    aliases, aliases.db       Postfix virtual_alias_maps       `<address> <target>[,<target>...]`
    senders, senders.db       Postfix smtpd_sender_login_maps  `<address> <login>[,<login>...]`
    dovecot-users             Dovecot passwd-file (userdb): who exists, home, quota; its
                              `{CRYPT}*` password matches nothing, so it lets nobody in.
                              (Seen with Dovecot 2.4.1: `userdb_quota_storage_size` overrides
                              a global `quota_storage_size`, not one set inside `quota <name> {}`.)
    directory.json            the same for other helpers (address -> username, pk, quota, aliases)
    state.json                authentik user pk -> mailbox folder, kept for ever
    status.json               the last round: when, outcome (ok/failed/refused), counts, why

    directory-sync CONFIG --once    one sync; exit 0 when the directory on disk is current
    directory-sync CONFIG           one sync now, then one every `interval` seconds
    directory-sync CONFIG --check   healthcheck: exit 0 when the last success is younger than
                                    3 intervals (at least 60 s) and the last round neither
                                    failed nor was refused; else 1, with one line saying why

CONFIG is a JSON object rendered by the Pulumi program: api_url, token_file,
ca_file or ca_dir, mail_domain, allowed_group, postmaster, default_quota,
mail_dir, vmail_uid, vmail_gid, output_dir, interval, page_size, timeout
(see `parse_config`). The token (intent `api`, its user may view users and
groups) is read from token_file every round, so a rotated token needs only a
new file; it is sent only as `Authorization: Bearer` and never logged.

Who has a mailbox: active users whose `email` is in mail_domain (case does not
matter), whose local part is safe (letters, digits, `.`, `_`, `+`, `-`; no
leading, trailing or double dot; at most 64 characters; lower-cased) and, when
allowed_group is set, who are members of that group (directly). Other users
are skipped with one log line each.

Attributes (authentik's free JSON "attributes" of users and groups):

    user  mail_aliases  a list of addresses in mail_domain, e.g. ["al@example.com"];
                        a single address as a string is taken as a list of one
    user  mail_quota    e.g. "2G": 1 to 6 digits (no leading 0) and M, G or T;
                        replaces default_quota for that mailbox
    group mail_address  one address in mail_domain: a list that delivers to every
                        member of the group that has a mailbox

A malformed entry (a quota "lots", an alias that is not a string or not in the
domain, an unsafe local part, an address that is already a mailbox, another
alias or list) is skipped alone, with one log line naming the user or group
and the attribute; the rest of that user or group stays. postmaster@ and
abuse@ of mail_domain (RFC 5321, RFC 2142) always deliver to `postmaster`; an
alias or list claiming them is skipped, and a round logs loudly when
`postmaster` is not a mailbox of the directory (the alias is written anyway).
Conflicts are settled the same way every round: mailboxes by lowest user pk,
then aliases by user pk, then lists by group name. Skip notes are logged when
they first appear (and once after start), not again every round; the
round's summary line counts them.

Mailbox folders: `<mail_dir>/<mail_domain>/<folder>`. A user's folder is fixed
the first time their pk is seen and kept in state.json, so a changed email
keeps the mail. A new user gets their lower-cased local part, or
`<localpart>.<pk>` when state.json already gives that folder to another pk
(a former user's mail stays theirs). The first sync (no state.json) adopts
the local parts, which is where the catch-all layout stored mail before.

Faults never empty or corrupt the directory: when authentik is unreachable,
answers anything but HTTP 200 (5xx; 403 for a revoked token or one without
permission), answers something that is not its paging shape, or the paging
is cut (a missing or repeated page, fewer results than `count`), the round
fails, nothing is written but status.json, the last good copy keeps serving,
and one log line says why. A round that finds zero mailboxes while the
directory on disk has some is REFUSED (logged every round, --check fails)
unless the operator creates the file `<output_dir>/allow-empty`: the next
round then applies the empty directory and deletes that file (one use).

Every file is written to a temporary file in output_dir, fsynced and renamed
over the old one; a map's `.db` is built by `postmap` from the temporary
source and renamed into place, so Postfix sees the old file unlinked and its
daemons restart before their next client. A file whose content did not change
is not touched (no write, no postmap, same mtime); only status.json changes
every round. Dovecot re-reads a passwd-file when its mtime or size changes; a
new dovecot-users of the same size written within the same second as the
old one gets its mtime moved one second on, so the change is never missed.

Python's standard library only (Debian's python3). One log line per decision
on stderr, prefixed `directory-sync:`.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlencode, urlsplit

USERS_PATH = "/api/v3/core/users/"
GROUPS_PATH = "/api/v3/core/groups/"
MAX_BODY = 32 << 20  # one page of 100 users is far below this
MAX_PAGES = 100_000  # a bound for the paging loop, far above any real directory
QUOTA = re.compile(r"^[1-9][0-9]{0,5}[MGT]$")
LOCAL_PART = re.compile(r"^[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*$")
DOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$")
RESERVED = ("postmaster", "abuse")  # RFC 5321 4.5.1, RFC 2142
ALLOW_EMPTY = "allow-empty"
TEMP_PREFIX = ".new-"
STATUS_VERSION = 1
DIRECTORY_VERSION = 1


def log(message: str) -> None:
    print(f"directory-sync: {message}", file=sys.stderr, flush=True)


class ConfigError(ValueError):
    """The CONFIG file is not usable."""


class RoundFailed(Exception):
    """This round cannot produce a trustworthy directory; keep the last good copy."""


# -- configuration --------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    api_url: str
    token_file: str
    mail_domain: str
    postmaster: str
    output_dir: str
    ca_file: str | None = None
    ca_dir: str | None = "/etc/ssl/certs"
    allowed_group: str | None = None
    default_quota: str = "5G"
    mail_dir: str = "/var/mail"
    vmail_uid: int = 5000
    vmail_gid: int = 5000
    interval: float = 60
    page_size: int = 100
    timeout: float = 10


_REQUIRED = ("api_url", "token_file", "mail_domain", "postmaster", "output_dir")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+/-]*$")


def parse_config(data: object) -> Config:
    """Validate the CONFIG document; every problem names its key."""
    if not isinstance(data, dict):
        raise ConfigError("CONFIG must be a JSON object")
    known = set(Config.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; known: {sorted(known)}")
    missing = [key for key in _REQUIRED if data.get(key) in (None, "")]
    if missing:
        raise ConfigError(f"missing {missing}")
    values: dict[str, Any] = {key: data[key] for key in known if key in data}

    def want(key: str, kind: type | tuple[type, ...], optional: bool = False) -> None:
        value = values.get(key)
        if value is None and (optional or key not in values):
            return
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{key}: expected {kind}, got {value!r}")

    for key in ("api_url", "token_file", "mail_domain", "postmaster", "output_dir", "default_quota", "mail_dir"):
        want(key, str)
    for key in ("ca_file", "ca_dir", "allowed_group"):
        want(key, str, optional=True)
    for key in ("vmail_uid", "vmail_gid", "page_size"):
        want(key, int)
    for key in ("interval", "timeout"):
        want(key, (int, float))
    config = Config(**values)

    parts = urlsplit(config.api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"api_url: expected http(s)://host[:port], got {config.api_url!r}")
    domain = config.mail_domain.lower()
    if not DOMAIN.match(domain):
        raise ConfigError(f"mail_domain: not a DNS name: {config.mail_domain!r}")
    postmaster = config.postmaster.strip()
    local, at, pm_domain = postmaster.rpartition("@")
    if not at or not local or not DOMAIN.match(pm_domain.lower()) or re.search(r"[\s,:%\"\\]", local):
        raise ConfigError(f"postmaster: expected an address such as postmaster-person@{domain}, got {postmaster!r}")
    if pm_domain.lower() == domain:
        if not safe_local_part(local.lower()):
            raise ConfigError(f"postmaster: unsafe local part in {postmaster!r}")
        postmaster = f"{local.lower()}@{domain}"
    else:
        postmaster = f"{local}@{pm_domain.lower()}"
    if not QUOTA.match(config.default_quota):
        raise ConfigError(f"default_quota: expected e.g. 5G (digits, then M, G or T), got {config.default_quota!r}")
    for key in ("mail_dir", "output_dir"):
        if not _SAFE_PATH.match(getattr(config, key)):
            raise ConfigError(f"{key}: expected an absolute path of letters, digits, '._+-/', got {getattr(config, key)!r}")
    for key in ("vmail_uid", "vmail_gid"):
        if not 0 < getattr(config, key) < 2**31:
            raise ConfigError(f"{key}: expected a positive id")
    if not 1 <= config.page_size <= 1000:
        raise ConfigError("page_size: expected 1 to 1000 (authentik 2025.12+ caps it at 100)")
    if not 1 <= config.interval <= 86400:
        raise ConfigError("interval: expected 1 to 86400 seconds")
    if not 0 < config.timeout <= 600:
        raise ConfigError("timeout: expected 0 to 600 seconds")
    return Config(**{**values, "api_url": config.api_url.rstrip("/"), "mail_domain": domain,
                     "postmaster": postmaster, "mail_dir": config.mail_dir.rstrip("/") or "/"})


def load_config(path: str) -> Config:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from None
    return parse_config(data)


# -- addresses and attributes ------------------------------------------------------------


def safe_local_part(local: str) -> bool:
    return len(local) <= 64 and LOCAL_PART.match(local) is not None


def address_in_domain(value: object, domain: str) -> tuple[str | None, str]:
    """(lower-cased address, "") for a safe address of the domain, else (None, why)."""
    if not isinstance(value, str):
        return None, f"not a string ({type(value).__name__})"
    local, at, its_domain = value.strip().rpartition("@")
    if not at:
        return None, f"{value!r} is not an address"
    if its_domain.lower() != domain:
        return None, f"{value!r} is not in {domain}"
    local = local.lower()
    if not safe_local_part(local):
        return None, f"{value!r} has an unsafe local part"
    return f"{local}@{domain}", ""


def parse_quota(value: object) -> tuple[str | None, str]:
    """(quota, "") when mail_quota is usable, else (None, why)."""
    if isinstance(value, str) and QUOTA.match(value):
        return value, ""
    return None, f"{value!r} is not a size like 2G (1-6 digits, then M, G or T)"


def parse_aliases(value: object) -> tuple[list[object], str]:
    """The entries of mail_aliases (a list; a lone string is a list of one), or ([], why)."""
    if isinstance(value, str):
        return [value], ""
    if isinstance(value, list):
        return list(value), ""
    return [], f"not a list of addresses ({type(value).__name__})"


_USERDB_SAFE = re.compile(r"^[!-~]+$")  # printable ASCII, no space


def userdb_safe(value: str) -> bool:
    """Fit for a passwd-file extra field: no space, ':', '%' or control character."""
    return _USERDB_SAFE.match(value) is not None and ":" not in value and "%" not in value


# -- what authentik answers -------------------------------------------------------------------


@dataclass
class User:
    """The parts of an authentik user the directory needs."""

    pk: int
    username: str
    email: str
    is_active: bool
    group_pks: frozenset[str]
    aliases: object = None  # attributes.mail_aliases, raw
    quota: object = None  # attributes.mail_quota, raw
    has_aliases: bool = False
    has_quota: bool = False


@dataclass
class Group:
    pk: str
    name: str
    members: list[int]
    mail_address: object = None  # attributes.mail_address, raw
    has_mail_address: bool = False


def _field(record: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = record.get(key)
    if isinstance(value, bool) and kind is int:
        value = None
    if not isinstance(value, kind):
        raise RoundFailed(f"{where}: field {key!r} is {type(value).__name__}, not {kind}")
    return value


def user_from_record(record: object, where: str) -> User:
    if not isinstance(record, dict):
        raise RoundFailed(f"{where}: not an object")
    attributes = _field(record, "attributes", dict, where)
    groups = _field(record, "groups", list, where)
    if not all(isinstance(g, str) for g in groups):
        raise RoundFailed(f"{where}: 'groups' is not a list of group ids")
    email = record.get("email")
    return User(
        pk=_field(record, "pk", int, where),
        username=_field(record, "username", str, where),
        email=email if isinstance(email, str) else "",
        is_active=_field(record, "is_active", bool, where),
        group_pks=frozenset(groups),
        aliases=attributes.get("mail_aliases"),
        quota=attributes.get("mail_quota"),
        has_aliases="mail_aliases" in attributes,
        has_quota="mail_quota" in attributes,
    )


def group_from_record(record: object, where: str) -> Group:
    if not isinstance(record, dict):
        raise RoundFailed(f"{where}: not an object")
    attributes = _field(record, "attributes", dict, where)
    users = _field(record, "users", list, where)
    if not all(isinstance(u, int) and not isinstance(u, bool) for u in users):
        raise RoundFailed(f"{where}: 'users' is not a list of user pks")
    has_address = "mail_address" in attributes
    return Group(
        pk=str(_field(record, "pk", str, where)),
        name=_field(record, "name", str, where),
        members=users if has_address else [],  # only lists need their members
        mail_address=attributes.get("mail_address"),
        has_mail_address=has_address,
    )


# -- talking to authentik ---------------------------------------------------------------------

Getter = Callable[[str], "tuple[int, Any]"]


class Api:
    """GET requests to authentik over one kept-alive HTTP(S) connection."""

    def __init__(self, config: Config, token: str):
        parts = urlsplit(config.api_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._timeout = config.timeout
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": "roundcube-authentik directory-sync",
        }
        self._context = None
        if self._https:
            self._context = ssl.create_default_context(
                cafile=config.ca_file or None, capath=None if config.ca_file else config.ca_dir
            )
        self._connection: http.client.HTTPConnection | None = None
        self.requests = 0

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._context)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def get(self, target: str) -> tuple[int, Any]:
        """(status, parsed JSON or None) for a path with query; RoundFailed when unreachable."""
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                self._connection = self._connect()
            try:
                self.requests += 1
                self._connection.request("GET", target, headers=self._headers)
                answer = self._connection.getresponse()
                body = answer.read(MAX_BODY + 1)
                if answer.will_close:
                    self.close()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as error:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed a kept-alive connection: once more on a new one
                raise RoundFailed(f"GET {target}: connection lost: {error or type(error).__name__}") from None
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise RoundFailed(f"GET {target}: {type(error).__name__}: {error}") from None
        if len(body) > MAX_BODY:
            raise RoundFailed(f"GET {target}: answer larger than {MAX_BODY} bytes")
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
            if answer.status == 200:
                raise RoundFailed(f"GET {target}: HTTP 200 but not JSON") from None
        return answer.status, parsed


def _describe_refusal(status: int, body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else None
    text = f"HTTP {status}"
    if isinstance(detail, str):
        text += f" ({detail[:200]})"
    elif isinstance(body, dict):
        text += f" ({json.dumps(body)[:200]})"
    if status in (401, 403):
        text += ": the token is unknown, expired or revoked, or its user may not view users and groups"
    elif status >= 500:
        text += ": authentik failed"
    return text


def read_pages(get: Getter, path: str, params: dict[str, str], page_size: int) -> list[dict[str, Any]]:
    """Every result of a paged authentik list, or RoundFailed when any page is off.

    Follows `pagination.next` (a page number, 0 = last) from page 1, whatever
    page size authentik really applies, and checks that the pages add up:
    each answer is page `current` == the page asked for, `count` stays the
    same, every page before the last is not empty, and the results number
    exactly `count`, with no record twice.
    """
    results: list[dict[str, Any]] = []
    seen: set[object] = set()
    count: int | None = None
    page = 1
    while True:
        target = f"{path}?{urlencode({**params, 'page': page, 'page_size': page_size})}"
        status, body = get(target)
        if status != 200:
            raise RoundFailed(f"GET {target}: {_describe_refusal(status, body)}")
        if not isinstance(body, dict) or not isinstance(body.get("pagination"), dict) \
                or not isinstance(body.get("results"), list):
            raise RoundFailed(f"GET {target}: not authentik's paging shape (pagination, results)")
        pagination = body["pagination"]
        numbers = {key: pagination.get(key) for key in ("next", "count", "current")}
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in numbers.values()):
            raise RoundFailed(f"GET {target}: pagination lacks next/count/current numbers: {numbers}")
        if numbers["current"] != page:
            raise RoundFailed(f"GET {target}: asked for page {page}, got page {numbers['current']} (paging cut)")
        if count is None:
            count = numbers["count"]
        elif numbers["count"] != count:
            raise RoundFailed(f"GET {target}: count changed from {count} to {numbers['count']} while paging "
                              "(the directory changed during the read; the next round reads it again)")
        page_results = body["results"]
        for record in page_results:
            key = record.get("pk") if isinstance(record, dict) else None
            if key is None or key in seen:
                raise RoundFailed(f"GET {target}: a record without pk or seen before (a repeated page)")
            seen.add(key)
        results.extend(page_results)
        if len(results) > count:
            raise RoundFailed(f"GET {target}: {len(results)} results so far but count is {count}")
        following = numbers["next"]
        if following == 0:
            break
        if not page_results:
            raise RoundFailed(f"GET {target}: an empty page {page} before the last (paging cut)")
        if following != page + 1:
            raise RoundFailed(f"GET {target}: page {page} says the next is {following} (a missing or repeated page)")
        if page >= MAX_PAGES:
            raise RoundFailed(f"GET {target}: more than {MAX_PAGES} pages")
        page = following
    if len(results) != count:
        raise RoundFailed(f"GET {path}: paging cut off: {len(results)} results, but authentik counted {count}")
    return results


def read_token(config: Config) -> str:
    try:
        token = Path(config.token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise RoundFailed(f"cannot read the API token from {config.token_file}: "
                          f"{getattr(error, 'strerror', None) or type(error).__name__}") from None
    if not token or any(c.isspace() for c in token):
        raise RoundFailed(f"{config.token_file} does not hold one token (empty, or several words)")
    return token


def fetch(config: Config, get: Getter) -> tuple[list[User], list[Group]]:
    """authentik's groups and the active users (of allowed_group, when set)."""
    group_records = read_pages(get, GROUPS_PATH, {"include_users": "false"}, config.page_size)
    groups = [group_from_record(r, f"group {i}") for i, r in enumerate(group_records)]
    user_params = {"is_active": "true", "include_groups": "false"}
    if config.allowed_group is not None:
        if not any(g.name == config.allowed_group for g in groups):
            raise RoundFailed(f"allowed_group {config.allowed_group!r} is not a group in authentik")
        user_params["groups_by_name"] = config.allowed_group
    user_records = read_pages(get, USERS_PATH, user_params, config.page_size)
    users = [user_from_record(r, f"user {i}") for i, r in enumerate(user_records)]
    return users, groups


# -- the directory -----------------------------------------------------------------------


@dataclass
class Mailbox:
    address: str
    username: str
    pk: int
    quota: str
    folder: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class Directory:
    mailboxes: dict[str, Mailbox]
    aliases: dict[str, list[str]]  # every alias map entry: user aliases, lists, postmaster@/abuse@
    alias_owner: dict[str, str]  # user alias -> owner's mailbox
    lists: dict[str, list[str]]
    folders: dict[int, str]  # state: pk -> folder, old entries kept
    notes: list[str]  # skipped entries, one line each
    loud: list[str]  # said every round
    skipped: int = 0


def assign_folder(pk: int, local: str, folders: dict[int, str], taken: set[str]) -> str:
    if pk in folders:
        return folders[pk]
    candidate = local
    if candidate in taken:
        candidate = f"{local}.{pk}"
        number = 2
        while candidate in taken:
            candidate = f"{local}.{pk}.{number}"
            number += 1
    folders[pk] = candidate
    taken.add(candidate)
    return candidate


def build_directory(config: Config, users: Iterable[User], groups: Iterable[Group],
                    folders: dict[int, str]) -> Directory:
    """The directory authentik's answer describes. Pure: same input, same output."""
    domain = config.mail_domain
    folders = dict(folders)
    taken = set(folders.values())
    notes: list[str] = []
    reserved = {f"{local}@{domain}" for local in RESERVED}
    allowed_pk = None
    groups = sorted(groups, key=lambda g: g.name)
    if config.allowed_group is not None:
        allowed_pk = next((g.pk for g in groups if g.name == config.allowed_group), None)

    mailboxes: dict[str, Mailbox] = {}
    by_pk: dict[int, Mailbox] = {}
    people = sorted(users, key=lambda u: u.pk)
    for user in people:
        who = f"user {user.username!r} (pk {user.pk})"
        if not user.is_active:
            continue  # asked for is_active=true; an inactive one here gets nothing
        if config.allowed_group is not None and allowed_pk not in user.group_pks:
            notes.append(f"{who}: not a member of {config.allowed_group!r}, no mailbox")
            continue
        if not user.email:
            notes.append(f"{who}: no email, no mailbox")
            continue
        address, why = address_in_domain(user.email, domain)
        if address is None:
            notes.append(f"{who}: email {why}, no mailbox")
            continue
        if address in reserved and address != config.postmaster:
            notes.append(f"{who}: email {address} is reserved (delivered to the postmaster {config.postmaster}), "
                         "no mailbox")
            continue
        if address in mailboxes:
            notes.append(f"{who}: email {address} is already the mailbox of user "
                         f"{mailboxes[address].username!r}, no mailbox")
            continue
        quota = config.default_quota
        if user.has_quota:
            parsed, why = parse_quota(user.quota)
            if parsed is None:
                notes.append(f"{who}: attribute mail_quota {why}; skipped, quota {config.default_quota}")
            else:
                quota = parsed
        local = address.split("@", 1)[0]
        mailbox = Mailbox(address, user.username, user.pk, quota, assign_folder(user.pk, local, folders, taken))
        mailboxes[address] = mailbox
        by_pk[user.pk] = mailbox

    aliases: dict[str, list[str]] = {}
    alias_owner: dict[str, str] = {}
    for user in people:
        owner_box = by_pk.get(user.pk)
        if owner_box is None or not user.has_aliases:
            continue
        who = f"user {user.username!r} (pk {user.pk})"
        entries, why = parse_aliases(user.aliases)
        if why:
            notes.append(f"{who}: attribute mail_aliases {why}; skipped")
        for entry in entries:
            alias, why = address_in_domain(entry, domain)
            if alias is None:
                notes.append(f"{who}: attribute mail_aliases entry {why}; skipped")
            elif alias in reserved:
                notes.append(f"{who}: attribute mail_aliases entry {alias} is reserved for the postmaster; skipped")
            elif alias == owner_box.address:
                notes.append(f"{who}: attribute mail_aliases entry {alias} is the user's own mailbox; skipped")
            elif alias in mailboxes:
                notes.append(f"{who}: attribute mail_aliases entry {alias} is the mailbox of user "
                             f"{mailboxes[alias].username!r}; skipped")
            elif alias in alias_owner:
                owner = mailboxes[alias_owner[alias]]
                same = owner.pk == user.pk
                notes.append(f"{who}: attribute mail_aliases entry {alias} is "
                             + ("listed twice" if same else f"already an alias of user {owner.username!r}")
                             + "; skipped")
            else:
                aliases[alias] = [owner_box.address]
                alias_owner[alias] = owner_box.address
                owner_box.aliases.append(alias)

    lists: dict[str, list[str]] = {}
    for group in groups:
        if not group.has_mail_address:
            continue
        what = f"group {group.name!r}"
        address, why = address_in_domain(group.mail_address, domain)
        if address is None:
            notes.append(f"{what}: attribute mail_address {why}; skipped")
            continue
        if address in reserved:
            notes.append(f"{what}: attribute mail_address {address} is reserved for the postmaster; skipped")
            continue
        if address in mailboxes:
            notes.append(f"{what}: attribute mail_address {address} is the mailbox of user "
                         f"{mailboxes[address].username!r}; skipped")
            continue
        if address in alias_owner:
            notes.append(f"{what}: attribute mail_address {address} is already an alias of user "
                         f"{mailboxes[alias_owner[address]].username!r}; skipped")
            continue
        if address in lists:
            notes.append(f"{what}: attribute mail_address {address} is already the address of another group; "
                         "skipped")
            continue
        members = sorted({by_pk[pk].address for pk in group.members if pk in by_pk})
        if not members:
            notes.append(f"{what}: list {address} has no member with a mailbox; skipped")
            continue
        lists[address] = members
        aliases[address] = members

    loud: list[str] = []
    for address in sorted(reserved):
        if address not in mailboxes:
            aliases[address] = [config.postmaster]
    if config.postmaster not in mailboxes:
        loud.append(f"postmaster {config.postmaster} is not a mailbox of this directory: "
                    f"mail to {' and '.join(sorted(reserved))} goes there anyway")
    return Directory(mailboxes, aliases, alias_owner, lists, folders, notes, loud, skipped=len(notes))


# -- rendering ------------------------------------------------------------------------------


def render_mailboxes(directory: Directory) -> str:
    return "".join(f"{address} OK\n" for address in sorted(directory.mailboxes))


def render_aliases(directory: Directory) -> str:
    return "".join(f"{address} {','.join(targets)}\n" for address, targets in sorted(directory.aliases.items()))


def render_senders(directory: Directory) -> str:
    """Who may send as an address (smtpd_sender_login_maps): the mailbox itself,
    an alias its owner; nobody sends as a list or as postmaster@/abuse@."""
    logins = {address: address for address in directory.mailboxes}
    logins.update(directory.alias_owner)
    return "".join(f"{address} {login}\n" for address, login in sorted(logins.items()))


def render_dovecot_users(config: Config, directory: Directory) -> str:
    lines = []
    for address, mailbox in sorted(directory.mailboxes.items()):
        home = f"{config.mail_dir}/{config.mail_domain}/{mailbox.folder}"
        extra = f"userdb_quota_storage_size={mailbox.quota}"
        if userdb_safe(mailbox.username):
            extra += f" authentik_username={mailbox.username}"
        lines.append(f"{address}:{{CRYPT}}*:{config.vmail_uid}:{config.vmail_gid}::{home}::{extra}\n")
    return "".join(lines)


def render_directory_json(directory: Directory) -> str:
    document = {
        "version": DIRECTORY_VERSION,
        "mailboxes": {
            address: {"username": m.username, "pk": m.pk, "quota": m.quota, "aliases": sorted(m.aliases)}
            for address, m in sorted(directory.mailboxes.items())
        },
        "lists": dict(sorted(directory.lists.items())),
    }
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def render_state(folders: dict[int, str]) -> str:
    document = {"version": 1, "folders": {str(pk): folders[pk] for pk in sorted(folders)}}
    return json.dumps(document, indent=1) + "\n"


def parse_state(text: str) -> dict[int, str]:
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("folders"), dict):
        raise ValueError("no 'folders' object")
    folders: dict[int, str] = {}
    for key, folder in document["folders"].items():
        if not key.isdigit() or not isinstance(folder, str) or not re.fullmatch(r"[a-z0-9_+.-]+", folder) \
                or folder.startswith("."):
            raise ValueError(f"bad entry {key!r}: {folder!r}")
        folders[int(key)] = folder
    return folders


# -- writing ---------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_file(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def find_postmap() -> str:
    return shutil.which("postmap") or "/usr/sbin/postmap"


class Output:
    """output_dir: atomic writes of changed files only."""

    def __init__(self, config: Config):
        self.dir = Path(config.output_dir)
        self.written: list[str] = []

    def path(self, name: str) -> Path:
        return self.dir / name

    def read(self, name: str) -> str | None:
        try:
            return self.path(name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _temporary(self, name: str, text: str) -> Path:
        handle, temporary = tempfile.mkstemp(dir=self.dir, prefix=f"{TEMP_PREFIX}{name}-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)
        except BaseException:
            os.unlink(temporary)
            raise
        return Path(temporary)

    def write(self, name: str, text: str, *, postmap: bool = False, distinct_mtime: bool = False) -> bool:
        """Write `name` when its content differs (or its .db is missing); True when written."""
        target = self.path(name)
        if self.read(name) == text and (not postmap or self.path(f"{name}.db").exists()):
            return False
        temporary = self._temporary(name, text)
        try:
            if distinct_mtime:
                self._keep_mtime_distinct(target, temporary)
            if postmap:
                self._postmap(temporary, self.path(f"{name}.db"))
            os.replace(temporary, target)
        finally:
            if temporary.exists():
                temporary.unlink()
        self.written.append(name)
        return True

    @staticmethod
    def _keep_mtime_distinct(target: Path, temporary: Path) -> None:
        """Dovecot's passwd-file reload compares mtime (whole seconds) and size:
        a same-size file from the same second would go unnoticed."""
        try:
            old = target.stat()
        except FileNotFoundError:
            return
        new = temporary.stat()
        if new.st_size == old.st_size and int(new.st_mtime) == int(old.st_mtime):
            later = int(old.st_mtime) + 1
            os.utime(temporary, (later, later))

    def _postmap(self, source: Path, database: Path) -> None:
        """`postmap hash:<temporary source>`, then the .db renamed into place.

        The image bakes no Postfix config, and postmap without a main.cf stops
        ("fatal: open /etc/postfix/main.cf"), so it reads an empty one of its
        own (`-c`): the compiled-in defaults are all a hash map needs. Its
        mtime is set far in the past: Postfix waits, 300 ms at a time, until
        a main.cf is more than a second old before reading it."""
        config_dir = self.dir / ".postmap"
        config_dir.mkdir(mode=0o755, exist_ok=True)
        main_cf = config_dir / "main.cf"
        if not main_cf.exists():
            main_cf.write_text("# empty: postmap's defaults (directory-sync)\n")
            os.utime(main_cf, (0, 0))
        built = source.with_name(source.name + ".db")
        try:
            result = subprocess.run([find_postmap(), "-c", str(config_dir), f"hash:{source}"],
                                    capture_output=True, text=True, check=False, timeout=300)
            if result.returncode != 0 or not built.exists():
                why = (result.stderr or result.stdout).strip().replace("\n", " | ")[:400]
                raise RoundFailed(f"postmap {database.name} failed (exit {result.returncode}): {why}")
            os.chmod(built, 0o644)
            _fsync_file(built)
            os.replace(built, database)
        except OSError as error:
            raise RoundFailed(f"postmap {database.name}: {error}") from None
        finally:
            if built.exists():
                built.unlink()

    def remove(self, name: str) -> None:
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            pass

    def sync(self) -> None:
        _fsync_dir(self.dir)

    def clean_leftovers(self) -> None:
        """Temporary files of a round that was killed half-way."""
        for leftover in self.dir.glob(f"{TEMP_PREFIX}*"):
            try:
                leftover.unlink()
            except OSError:
                pass


# -- one round ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    outcome: str  # ok | failed | refused
    reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def mailbox_count_on_disk(output: Output) -> int:
    text = output.read("directory.json")
    if text is not None:
        try:
            mailboxes = json.loads(text).get("mailboxes")
            if isinstance(mailboxes, dict):
                return len(mailboxes)
        except (ValueError, AttributeError):
            pass
    users = output.read("dovecot-users") or ""
    return sum(1 for line in users.splitlines() if line.strip())


class Syncer:
    """Rounds of the sync; remembers the skip notes already logged."""

    def __init__(self, config: Config, get: Getter | None = None):
        self.config = config
        self._get = get  # tests may pass their own
        self._noted: set[str] = set()
        self._last_outcome: str | None = None

    def _status(self, output: Output, outcome: Outcome, started: float) -> None:
        previous: dict[str, Any] = {}
        text = output.read("status.json")
        if text:
            try:
                previous = json.loads(text)
            except ValueError:
                previous = {}
        last_success = started if outcome.ok else previous.get("last_success_unix")
        status = {
            "version": STATUS_VERSION,
            "outcome": outcome.outcome,
            "reason": outcome.reason,
            "last_attempt": _iso(started),
            "last_attempt_unix": round(started, 3),
            "last_success": _iso(last_success) if isinstance(last_success, (int, float)) else None,
            "last_success_unix": round(last_success, 3) if isinstance(last_success, (int, float)) else None,
            "duration_s": round(outcome.seconds, 3),
            "requests": outcome.requests,
            "counts": outcome.counts,
            "written": outcome.written,
        }
        output.write("status.json", json.dumps(status, indent=1) + "\n")

    def round(self) -> Outcome:
        """One sync under the output folder's lock; never raises for authentik's faults."""
        started = time.time()
        clock = time.monotonic()
        output = Output(self.config)
        api: Api | None = None
        try:
            output.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            with open(output.dir / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    output.clean_leftovers()
                    get = self._get
                    if get is None:
                        api = Api(self.config, read_token(self.config))
                        get = api.get
                    outcome = self._apply(output, get)
                except RoundFailed as error:
                    outcome = Outcome("failed", str(error))
                except Exception as error:  # noqa: BLE001 - a bug or a full disk must not end the loop
                    outcome = Outcome("failed", f"unexpected {type(error).__name__}: {error}")
                finally:
                    if api is not None:
                        api.close()
                outcome.requests = api.requests if api is not None else 0
                outcome.seconds = time.monotonic() - clock
                outcome.written = list(output.written)
                self._status(output, outcome, started)
        except OSError as error:
            outcome = Outcome("failed", f"cannot use {output.dir}: {error}")
        if outcome.outcome == "failed":
            log(f"round failed, the directory on disk stays as it was: {outcome.reason}")
        elif outcome.outcome == "refused":
            log(f"REFUSED: {outcome.reason}")
        self._last_outcome = outcome.outcome
        return outcome

    def _apply(self, output: Output, get: Getter) -> Outcome:
        config = self.config
        users, groups = fetch(config, get)
        state_text = output.read("state.json")
        if state_text is None:
            folders: dict[int, str] = {}
            if output.read("directory.json") is not None:
                log("state.json is missing but a directory exists: folders are assigned afresh from local parts")
        else:
            try:
                folders = parse_state(state_text)
            except (ValueError, AttributeError) as error:
                raise RoundFailed(f"state.json is unreadable ({error}); fix or remove it "
                                  "(without it, folders are assigned afresh from local parts)") from None
        directory = build_directory(config, users, groups, folders)
        counts = {
            "users": len(users),
            "groups": len(groups),
            "mailboxes": len(directory.mailboxes),
            "aliases": len(directory.alias_owner),
            "lists": len(directory.lists),
            "skipped": directory.skipped,
        }
        fresh = [note for note in directory.notes if note not in self._noted]
        self._noted = set(directory.notes)
        for note in fresh:
            log(f"skipped: {note}")
        for line in directory.loud:
            log(f"WARNING: {line}")

        allow_empty = output.path(ALLOW_EMPTY).exists()
        on_disk = mailbox_count_on_disk(output)
        if not directory.mailboxes and on_disk and not allow_empty:
            return Outcome("refused",
                           f"authentik's answer has no mailbox but the directory on disk has {on_disk}; "
                           f"not applied (the old directory keeps serving). If that is intended, create "
                           f"{output.path(ALLOW_EMPTY)} and the next round applies it",
                           counts)

        changed = []
        # Folders first: a round killed half-way must not forget them.
        if output.write("state.json", render_state(directory.folders)):
            changed.append("state.json")
        for name, text in (("mailboxes", render_mailboxes(directory)),
                           ("aliases", render_aliases(directory)),
                           ("senders", render_senders(directory))):
            if output.write(name, text, postmap=True):
                changed.append(f"{name}(.db)")
        if output.write("dovecot-users", render_dovecot_users(config, directory), distinct_mtime=True):
            changed.append("dovecot-users")
        if output.write("directory.json", render_directory_json(directory)):
            changed.append("directory.json")
        if not directory.mailboxes and on_disk and allow_empty:
            output.remove(ALLOW_EMPTY)
            log(f"applied an EMPTY directory over {on_disk} mailboxes because {ALLOW_EMPTY} existed; "
                f"removed {ALLOW_EMPTY}")
        if changed:
            output.sync()
        summary = (f"{counts['mailboxes']} mailboxes, {counts['aliases']} aliases, {counts['lists']} lists, "
                   f"{counts['skipped']} skipped entries (from {counts['users']} users, {counts['groups']} groups)")
        if changed:
            log(f"directory changed: wrote {', '.join(changed)}; {summary}")
        elif self._last_outcome != "ok":
            log(f"directory current, nothing to write; {summary}")
        return Outcome("ok", None, counts)


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


# -- healthcheck ------------------------------------------------------------------------------


def check(config: Config, now: float | None = None) -> tuple[bool, str]:
    """(healthy, one line why) from status.json."""
    now = time.time() if now is None else now
    path = Path(config.output_dir) / "status.json"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False, f"no round has finished yet ({path} is missing)"
    except (OSError, ValueError) as error:
        return False, f"cannot read {path}: {error}"
    limit = max(3 * config.interval, 60)
    last_success = status.get("last_success_unix")
    if status.get("outcome") != "ok":
        return False, f"the last round was {status.get('outcome')}: {status.get('reason')}"
    if not isinstance(last_success, (int, float)):
        return False, "no successful round yet"
    age = now - last_success
    if age > limit:
        return False, f"the last successful round was {age:.0f} s ago (limit {limit:.0f} s): is the sync running?"
    return True, f"ok: last successful round {age:.0f} s ago, {status.get('counts', {}).get('mailboxes')} mailboxes"


# -- main ------------------------------------------------------------------------------------


class _Stop(BaseException):
    pass


def run_forever(config: Config) -> None:
    syncer = Syncer(config)
    stopping = False
    in_round = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if not in_round:
            raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"started: {config.api_url} every {config.interval:g} s into {config.output_dir}")
    try:
        while not stopping:
            began = time.monotonic()
            in_round = True
            syncer.round()
            in_round = False
            if stopping:
                break
            time.sleep(max(0.0, began + config.interval - time.monotonic()))
    except _Stop:
        pass
    log("stopped")


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] not in ("--once", "--check")):
        print(__doc__, file=sys.stderr)
        return 2
    os.umask(0o022)
    try:
        config = load_config(argv[1])
    except ConfigError as error:
        if len(argv) == 3 and argv[2] == "--check":
            print(f"unhealthy: {error}")
            return 1
        log(f"cannot start: {error}")
        return 2
    if len(argv) == 3 and argv[2] == "--check":
        healthy, why = check(config)
        print(why if healthy else f"unhealthy: {why}")
        return 0 if healthy else 1
    if len(argv) == 3:
        return 0 if Syncer(config).round().ok else 1
    run_forever(config)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

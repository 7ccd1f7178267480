#!/usr/bin/python3
"""Checks the authentik app passwords mail clients log in with (PLAIN/LOGIN).

Dovecot's passdb for PLAIN and LOGIN is a thin Lua script
(/usr/local/lib/roundcube-authentik/app-password.lua) that POSTs each login
to this server on the container's loopback and maps its answer. The rules,
in order:

1. The connection must be secured: `secured` is "TLS" (IMAP over TLS) or
   "secured" (Postfix's SASL client sends it for a TLS session). Else
   `disabled`: a password is never checked for a cleartext connection.
2. The login name (lower-cased) must be a mailbox of the directory
   (`directory_file`, the directory-sync's directory.json, re-read when it
   changes); the authentik username comes from there. Unreadable or missing:
   `tempfail`.
3. Throttle: after `max_user_failures` failures for this user from this
   client address, or `max_address_failures` from this address (IPv6: its
   /64) within `throttle_seconds`, further attempts fail ("throttled")
   without asking authentik, until the oldest failure leaves the window.
   Throttled attempts do not count as failures themselves.
4. Cache: a success for this (user, password) younger than `cache_seconds`
   is a success again without asking authentik. Its lifetime is not
   extended by use, so a deleted app password or a deactivated user stops
   working at most `cache_seconds` after the last call to authentik.
   Failures are never cached.
5. authentik's token endpoint: grant_type=password with the username and the
   app password, the configured client's id and secret (HTTP Basic) and
   `scope`. authentik handles it like client_credentials: an ACTIVE user,
   an unexpired app_password token of theirs with that key, and the
   application's policies (allowed group); any refusal is HTTP 400
   invalid_grant (-> `fail`). A 200 answer's access token must name this
   client (`aud` and `azp`), an accepted issuer, a future `exp`, and the
   login name as `email`. Any other answer, or no answer: `tempfail`.

    app-password-check CONFIG                          serve; returns once listening
    app-password-check CONFIG --once USER REMOTE_IP    one check (password on stdin,
                                                       the connection taken as TLS);
                                                       prints the answer; exit 0 ok,
                                                       1 fail or disabled, 2 tempfail

HTTP: `POST /check`, form fields user, password, remote_ip, secured, protocol,
mechanism. Answers (text/plain, a word and a reason): `200 ok ...`,
`403 fail <reason>`, `403 disabled <reason>`, `503 tempfail <reason>`.

CONFIG (JSON, rendered by the Pulumi program; it holds the client secret, so
it is read as root, and the server then runs as nobody):

    listen_port           8078
    token_url             authentik's <base>/application/o/token/
    client_id, client_secret
    ca_file | ca_dir      trust for authentik's certificate (as jwks-sync)
    issuers               accepted `iss` values (list)
    directory_file        /var/lib/roundcube-authentik/directory/directory.json
    cache_seconds         60
    scope                 "openid email" (without `email` no token carries one)
    timeout               10 (seconds, per request to authentik)
    throttle_seconds      300
    max_user_failures     10   per (user, client address)
    max_address_failures  30   per client address (IPv6: per /64)

One log line per decision on stderr, for fail2ban, e.g.

    app-password: refused user=<alice@example.com> rip=192.0.2.7 protocol=imap reason=wrong password (authentik: invalid_grant)
    app-password: accepted user=<alice@example.com> rip=192.0.2.7 protocol=imap via=cache

Never logs a password, an app password, the client secret or a token.
Debian's python3, standard library only.
"""

from __future__ import annotations

import base64
import binascii
import collections
import encodings.idna  # noqa: F401 - socket encodes host names with it; imported while still root
import hashlib
import http.client
import hmac
import ipaddress
import json
import os
import pwd
import resource
import secrets
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

MAX_BODY = 16 * 1024  # a check request: a user name, a password and a few short fields
MAX_ANSWER = 1 << 20  # authentik's token answer
MAX_PASSWORD = 1024  # authentik's keys are far shorter
MAX_TRACKED = 100_000  # throttle and cache entries kept at most (memory bound under attack)
SECURED = ("TLS", "secured")


def log(message: str) -> None:
    print(f"app-password: {message}", file=sys.stderr, flush=True)


# -- settings -------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """The CONFIG file is not usable."""


@dataclass(frozen=True)
class Config:
    listen_port: int
    token_url: str
    client_id: str
    client_secret: str
    ca_file: str | None
    ca_dir: str | None
    issuers: tuple[str, ...]
    directory_file: str
    cache_seconds: float
    scope: str
    timeout: float
    throttle_seconds: float
    max_user_failures: int
    max_address_failures: int


DEFAULTS: dict[str, Any] = {
    "listen_port": 8078,
    "ca_file": None,
    "ca_dir": None,
    "cache_seconds": 60,
    "scope": "openid email",
    "timeout": 10,
    "throttle_seconds": 300,
    "max_user_failures": 10,
    "max_address_failures": 30,
}
REQUIRED = ("token_url", "client_id", "client_secret", "issuers", "directory_file")


def _number(document: dict, key: str, *, minimum: float, integer: bool = False) -> Any:
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key} must be {kind} >= {minimum}, got {value!r}")
    return value


def parse_config(document: object) -> Config:
    if not isinstance(document, dict):
        raise ConfigError("CONFIG must be a JSON object")
    unknown = sorted(set(document) - set(DEFAULTS) - set(REQUIRED))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}")
    missing = [key for key in REQUIRED if document.get(key) in (None, "")]
    if missing:
        raise ConfigError(f"missing {missing}")
    values = {**DEFAULTS, **{k: v for k, v in document.items() if v is not None}}
    url = urllib.parse.urlsplit(str(values["token_url"]))
    if url.scheme not in ("https", "http") or not url.hostname or url.username or url.query or url.fragment:
        raise ConfigError(f"token_url must be an http(s):// URL with no user info, query or fragment, "
                          f"got {values['token_url']!r}")
    for key in ("client_id", "client_secret", "directory_file", "scope"):
        if not isinstance(values[key], str) or not values[key]:
            raise ConfigError(f"{key} must be a non-empty string")
    issuers = values["issuers"]
    if not isinstance(issuers, list) or not issuers or not all(isinstance(i, str) and i for i in issuers):
        raise ConfigError("issuers must be a non-empty list of strings")
    for key in ("ca_file", "ca_dir"):
        if values[key] is not None and (not isinstance(values[key], str) or not values[key]):
            raise ConfigError(f"{key} must be a path or null")
    port = _number(values, "listen_port", minimum=1, integer=True)
    if port > 65535:
        raise ConfigError(f"listen_port must be at most 65535, got {port}")
    return Config(
        listen_port=port,
        token_url=values["token_url"],
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        ca_file=values["ca_file"],
        ca_dir=values["ca_dir"],
        issuers=tuple(issuers),
        directory_file=values["directory_file"],
        cache_seconds=_number(values, "cache_seconds", minimum=0),
        scope=values["scope"],
        timeout=_number(values, "timeout", minimum=0.1),
        throttle_seconds=_number(values, "throttle_seconds", minimum=0),
        max_user_failures=_number(values, "max_user_failures", minimum=1, integer=True),
        max_address_failures=_number(values, "max_address_failures", minimum=1, integer=True),
    )


def load_config(path: str) -> Config:
    try:
        return parse_config(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: {error}") from None


# -- answers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    verdict: str  # ok | fail | disabled | tempfail
    reason: str

    @property
    def status(self) -> int:
        return {"ok": 200, "fail": 403, "disabled": 403}.get(self.verdict, 503)

    @property
    def exit_code(self) -> int:
        return {"ok": 0, "fail": 1, "disabled": 1}.get(self.verdict, 2)

    def text(self) -> str:
        return f"{self.verdict} {self.reason}"


def _loggable(value: str, limit: int = 128) -> str:
    """A client-supplied name, safe in one log line and in a fail2ban match: no spaces,
    controls, angle brackets or non-ASCII (each becomes \\xNN), at most `limit` characters."""
    text = "".join(c if ("!" <= c <= "~" and c not in "<>\\") else f"\\x{ord(c):02x}" for c in value[:limit])
    return text + ("..." if len(value) > limit else "")


def _address(remote_ip: str) -> str:
    try:
        return str(ipaddress.ip_address(remote_ip.strip()))
    except ValueError:
        return "unknown"


def _address_group(address: str) -> str:
    """The throttle's key for an address: itself, or its /64 for IPv6 (a host may own a whole /64)."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


# -- the directory ----------------------------------------------------------------------------------


class DirectoryError(Exception):
    """directory.json is missing, unreadable or not the sync's format."""


class Directory:
    """address -> authentik username, from the directory-sync's directory.json; re-read
    whenever its inode, size or mtime changes (the sync replaces it atomically)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._usernames: dict[str, str] = {}

    def username(self, address: str) -> str | None:
        with self._lock:
            try:
                info = os.stat(self.path)
                stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
                if stamp != self._stamp:
                    self._usernames = self._read()
                    self._stamp = stamp
                    log(f"directory {self.path}: {len(self._usernames)} mailboxes")
            except (OSError, ValueError) as error:
                self._stamp = None
                self._usernames = {}
                raise DirectoryError(f"directory unusable ({error})") from None
            return self._usernames.get(address)

    def _read(self) -> dict[str, str]:
        document = json.loads(Path(self.path).read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("version") != 1 or not isinstance(
                document.get("mailboxes"), dict):
            raise ValueError("not a version 1 directory.json with mailboxes")
        usernames = {}
        for address, mailbox in document["mailboxes"].items():
            if isinstance(mailbox, dict) and isinstance(mailbox.get("username"), str) and mailbox["username"]:
                usernames[address.lower()] = mailbox["username"]
        return usernames


# -- throttle and cache ------------------------------------------------------------------------------


class Throttle:
    """Failures per (user, address) and per address within a sliding window."""

    def __init__(self, window: float, max_user: int, max_address: int, clock: Callable[[], float]):
        self.window = window
        self.max_user = max_user
        self.max_address = max_address
        self.clock = clock
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, ...], collections.deque[float]] = {}

    def _recent(self, key: tuple[str, ...], now: float) -> collections.deque[float]:
        times = self._failures.get(key)
        if times is None:
            return collections.deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def refused(self, user: str, address: str) -> str | None:
        """Why this attempt may not reach authentik, or None."""
        now = self.clock()
        group = _address_group(address)
        with self._lock:
            pair = len(self._recent(("user", user, group), now))
            if pair >= self.max_user:
                return f"throttled ({pair} failures for this user from this address in {self.window:g} s)"
            total = len(self._recent(("address", group), now))
            if total >= self.max_address:
                return f"throttled ({total} failures from this address in {self.window:g} s)"
        return None

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        group = _address_group(address)
        with self._lock:
            if len(self._failures) >= MAX_TRACKED:
                for key in list(self._failures):
                    self._recent(key, now)
                if len(self._failures) >= MAX_TRACKED:  # still full: forget the stalest half
                    stalest = sorted(self._failures, key=lambda k: self._failures[k][-1])
                    for key in stalest[: len(stalest) // 2]:
                        del self._failures[key]
            for key in (("user", user, group), ("address", group)):
                self._failures.setdefault(key, collections.deque()).append(now)


class SuccessCache:
    """Recent successes: HMAC(process key, login, username, password) -> when it expires.

    The key is a keyed hash, so not even this process's memory holds anything
    a password could be guessed against offline. An entry's lifetime starts
    at the call to authentik and is never extended by a hit."""

    def __init__(self, seconds: float, clock: Callable[[], float]):
        self.seconds = seconds
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._entries: dict[bytes, float] = {}
        self._inflight: dict[bytes, threading.Lock] = {}

    def key(self, user: str, username: str, password: str) -> bytes:
        message = b"\0".join(part.encode("utf-8") for part in (user, username, password))
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def hit(self, key: bytes) -> bool:
        with self._lock:
            expires = self._entries.get(key)
            if expires is None:
                return False
            if expires <= self.clock():
                del self._entries[key]
                return False
            return True

    def add(self, key: bytes) -> None:
        if self.seconds <= 0:
            return
        now = self.clock()
        with self._lock:
            if len(self._entries) >= MAX_TRACKED:
                for old in [k for k, expires in self._entries.items() if expires <= now]:
                    del self._entries[old]
                if len(self._entries) >= MAX_TRACKED:
                    self._entries.clear()
            self._entries[key] = now + self.seconds

    def single_flight(self, key: bytes) -> "_Flight":
        """Concurrent checks of the same (user, password), e.g. a phone opening three
        connections at once, ask authentik once: the others wait, then find the cache."""
        with self._lock:
            lock = self._inflight.setdefault(key, threading.Lock())
        return _Flight(self, key, lock)

    def _release(self, key: bytes, lock: threading.Lock) -> None:
        with self._lock:
            if self._inflight.get(key) is lock and not lock.locked():
                del self._inflight[key]


class _Flight:
    def __init__(self, cache: SuccessCache, key: bytes, lock: threading.Lock):
        self.cache, self.key, self.lock = cache, key, lock

    def __enter__(self) -> None:
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
        self.cache._release(self.key, self.lock)


# -- authentik --------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The token endpoint answers itself; a redirect would resend nothing useful."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def tls_context(config: Config) -> ssl.SSLContext:
    # Built once, as root: a CA file readable only by root still loads.
    return ssl.create_default_context(cafile=config.ca_file or None,
                                      capath=None if config.ca_file else config.ca_dir)


def _claims(token: object) -> dict[str, Any] | None:
    """The payload of a JWS compact serialization, unverified; None if it is not one."""
    if not isinstance(token, str):
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


class Authentik:
    def __init__(self, config: Config, context: ssl.SSLContext | None):
        self.config = config
        handlers: list[Any] = [_NoRedirect()]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)
        credentials = (f"{urllib.parse.quote(config.client_id, safe='')}:"
                       f"{urllib.parse.quote(config.client_secret, safe='')}")  # RFC 6749 2.3.1
        self._authorization = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")

    def check(self, login: str, username: str, password: str) -> Answer:
        body = urllib.parse.urlencode({"grant_type": "password", "username": username, "password": password,
                                       "scope": self.config.scope}).encode("ascii")
        request = urllib.request.Request(self.config.token_url, data=body, method="POST", headers={
            "Authorization": self._authorization, "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with self._opener.open(request, timeout=self.config.timeout) as response:
                status, text = response.status, response.read(MAX_ANSWER)
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read(MAX_ANSWER)
        except (OSError, ValueError, http.client.HTTPException) as error:  # refused, reset, timeout, TLS
            return Answer("tempfail", f"authentik unreachable ({error})")
        try:
            document = json.loads(text)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            return Answer("tempfail", f"authentik answered HTTP {status} without a JSON object")
        if status == 400 and document.get("error") == "invalid_grant":
            # Wrong key, login password, expired or deleted app password, API token,
            # inactive user, user outside the application's policy: all the same answer.
            return Answer("fail", "wrong password (authentik: invalid_grant)")
        if status != 200:
            code = document.get("error")
            return Answer("tempfail", f"authentik answered HTTP {status}"
                          + (f" {_loggable(code, 40)}" if isinstance(code, str) else ""))
        return self._identity(login, document.get("access_token"))

    def _identity(self, login: str, access_token: object) -> Answer:
        # The token is not signature-checked: it came straight from authentik's token
        # endpoint, in the answer to this request, over TLS whose server certificate
        # this process verified (OIDC Core 1.0, 3.1.3.7, point 6: TLS server validation
        # may replace the signature check for a token received directly from the token
        # endpoint). With an http:// token_url (dev stacks) the network is trusted instead.
        claims = _claims(access_token)
        if claims is None:
            return Answer("tempfail", "authentik's access token is not a readable JWT")
        client_id = self.config.client_id
        audience = claims.get("aud")
        if not (audience == client_id or (isinstance(audience, list) and client_id in audience)) \
                or claims.get("azp") != client_id:
            return Answer("fail", "token of another client (aud/azp)")
        if claims.get("iss") not in self.config.issuers:
            return Answer("fail", f"token issuer {_loggable(str(claims.get('iss')), 200)} not accepted")
        expires = claims.get("exp")
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or expires <= time.time():
            return Answer("fail", "token expired or without exp")
        email = claims.get("email")
        if not isinstance(email, str) or not email:
            return Answer("fail", "token without email (is `email` in the scope and assigned to the provider?)")
        if email.lower() != login:
            return Answer("fail", "the app password's user has another email")
        return Answer("ok", "authentik")


# -- the checker ---------------------------------------------------------------------------------------


class Checker:
    def __init__(self, config: Config, context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.directory = Directory(config.directory_file)
        self.throttle = Throttle(config.throttle_seconds, config.max_user_failures, config.max_address_failures,
                                 clock)
        self.cache = SuccessCache(config.cache_seconds, clock)
        if context is None and config.token_url.startswith("https://"):
            context = tls_context(config)
        self.authentik = Authentik(config, context)

    def check(self, user: str, password: str, remote_ip: str, secured: str, protocol: str = "",
              mechanism: str = "") -> Answer:
        login = user.strip().lower()
        address = _address(remote_ip)
        who = f"user=<{_loggable(login)}> rip={address}" + (f" protocol={_loggable(protocol, 16)}" if protocol else "")
        answer, via = self._decide(login, password, address, secured)
        if answer.verdict == "ok":
            log(f"accepted {who} via={via}")
        elif answer.verdict == "tempfail":
            log(f"tempfail {who} reason={answer.reason}")
        else:
            log(f"refused {who} reason={answer.reason}")
        return answer

    def _decide(self, login: str, password: str, address: str, secured: str) -> tuple[Answer, str]:
        if secured not in SECURED:
            return Answer("disabled", "TLS required (cleartext connection)"), ""
        try:
            username = self.directory.username(login)
        except DirectoryError as error:
            return Answer("tempfail", str(error)), ""
        refused = self.throttle.refused(login, address)
        if refused:
            return Answer("fail", refused), ""
        if username is None:
            answer = Answer("fail", "not a mailbox of the directory")
        elif not password or len(password) > MAX_PASSWORD:
            answer = Answer("fail", "empty or overlong password")
        else:
            key = self.cache.key(login, username, password)
            with self.cache.single_flight(key):
                if self.cache.hit(key):
                    return Answer("ok", "cached"), "cache"
                answer = self.authentik.check(login, username, password)
                if answer.verdict == "ok":
                    self.cache.add(key)
                    return answer, "authentik"
        if answer.verdict == "fail":
            self.throttle.failed(login, address)
        return answer, ""


# -- the HTTP server ----------------------------------------------------------------------------------


def make_handler(checker: Checker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 64 * 1024  # headers and body leave in one write

        def _answer(self, status: int, text: str) -> None:
            body = (text + "\n").encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/check":
                self._answer(404, "tempfail no such endpoint")
                return
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self.close_connection = True
                self._answer(400, "tempfail malformed request (length)")
                return
            raw = self.rfile.read(length)
            try:
                form = urllib.parse.parse_qs(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False,
                                             encoding="utf-8", errors="strict")
            except UnicodeError:
                self._answer(403, "fail malformed request (not UTF-8)")
                return
            fields = {name: form.get(name, [""])[0] for name in
                      ("user", "password", "remote_ip", "secured", "protocol", "mechanism")}
            if not fields["user"]:
                self._answer(400, "tempfail malformed request (no user)")
                return
            try:
                answer = checker.check(**fields)
            except Exception as error:  # noqa: BLE001 - answer (tempfail) rather than drop the connection
                log(f"tempfail: internal error {type(error).__name__}: {error}")
                answer = Answer("tempfail", "internal error")
            self._answer(answer.status, answer.text())

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - no access log
            pass

    return Handler


def make_server(checker: Checker, port: int) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(checker))
    server.daemon_threads = True
    return server


def drop_privileges() -> None:
    """Run as nobody (the container keeps CAP_SETUID/CAP_SETGID for this); no core dumps."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam("nobody")
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        uid = gid = 65534
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if 0 in (os.getuid(), os.geteuid(), os.getgid(), os.getegid()):
        raise OSError("could not leave root")


def main(argv: list[str]) -> int:
    once = len(argv) == 5 and argv[2] == "--once"
    if len(argv) != 2 and not once:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        config = load_config(argv[1])
        checker = Checker(config)  # reads the CA file while still root
        server = None if once else make_server(checker, config.listen_port)
        drop_privileges()
    except (ConfigError, OSError, ssl.SSLError) as error:
        log(f"cannot start: {error}")
        return 2
    if not config.token_url.startswith("https://"):
        log(f"warning: token_url {config.token_url} is not https: authentik's answers are trusted unverified")
    if once:
        password = sys.stdin.readline().rstrip("\r\n")
        answer = checker.check(argv[3], password, argv[4], "TLS", "once", "plain")
        print(answer.text())
        return answer.exit_code
    assert server is not None
    log(f"listening on 127.0.0.1:{config.listen_port}, asking {config.token_url} as {config.client_id}; "
        f"cache {config.cache_seconds:g} s; throttle {config.max_user_failures} failures per user and address, "
        f"{config.max_address_failures} per address, in {config.throttle_seconds:g} s")
    # Return only once the port is open, so Dovecot's first login finds it.
    if os.fork() == 0:
        os.setsid()
        try:
            server.serve_forever()
        finally:
            os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

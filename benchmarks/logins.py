"""Benchmark: IMAP logins per second, by token_validation mode and with app passwords, against the ceilings.

    bash scripts/docker-engine.sh start && .venv/bin/python benchmarks/logins.py --json results.json

In one run on one machine it starts the project's Dovecot image with the
program's rendered configuration (the e2e stack's settings, captured through
Pulumi's mocks) next to the authentik stand-in, whose answers take
--idp-delay-ms (default 30 ms, as a real authentik answers), and measures two
suites (--suites) with the same client:

tokens (plain IMAP on loopback, no TLS, so every mode pays the same transport;
XOAUTH2 with one access token of alice's):

- introspection: token_validation: introspection (one authentik call per login);
- local:         token_validation: local (Dovecot checks the JWT itself);
- ceiling:       the local mode's config with a local password database
                 (passwd-file, {PLAIN}, AUTHENTICATE PLAIN) instead of OAuth.

app-passwords (IMAPS: implicit TLS, a new TCP and TLS handshake per login,
no session resumption, like a phone; clients.app_passwords on; AUTHENTICATE
PLAIN with an authentik app password, one user and app password per client):

- app-password (cached):   the real Lua passdb and checker, clients.cache_seconds
                           as --cache-seconds (default: the setting's default, 60):
                           the steady state of phones polling;
- app-password (no cache): the same with cache_seconds 0, every login asks
                           authentik's token endpoint;
- password ceiling:        the same config with the app-password passdb replaced
                           by a passwd-file holding each user's password (the same
                           string as the app password) hashed by `doveadm pw` with
                           its default scheme (Dovecot 2.4.1: {CRYPT}, bcrypt $2y$
                           cost 5): the best a password login can do here.

Every Dovecot has the directory (directory: authentik) of the e2e users,
written by images/postfix/directory-sync.py's own functions from the stack's
sync settings; the stand-in knows the program's application and provider and
an app password (intent app_password) of each benchmark user.

Runs: --runs, default 1 client x 300 logins and 8 clients x 100 logins
(processes, so the client is not serialised by Python's GIL), each login a
new TCP connection (greeting, AUTHENTICATE with the initial response,
LOGOUT). All Dovecot containers run side by side and the modes take turns
in --chunks rounds, so the load of a shared machine weighs on each mode
alike. It prints a table per suite and writes JSON: per mode and client
count logins_per_s, median_ms, p95_ms, idp_calls (introspection and token
requests the stand-in logged during that mode's turns) and idp_calls_per_login
and errors, plus the ratio of local to ceiling and of app-password (cached)
to password ceiling per client count. No assertions: it prints numbers.

Everything talks to 127.0.0.1 or inside the benchmark's own Docker network;
every loop has a fixed count; every container and the network are removed at
the end. Names and ports follow E2E_INSTANCE / E2E_PORT_OFFSET like the e2e
tests, so checkouts sharing an engine do not collide.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import importlib.util
import io
import json
import re
import secrets
import socket
import ssl
import statistics
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from components.render import layout  # noqa: E402
from components.settings import ClientSettings  # noqa: E402
from offline.capture import Capture, capture  # noqa: E402
from offline.stack_file import StackConfig  # noqa: E402
from tests.e2e.deploy import build_images  # noqa: E402
from tests.e2e.environment import (  # noqa: E402
    AUTH_HOST, GROUPS, INSTANCE, LOAD_USERS, LOOPBACK, MAIL_HOST, MAIN, PORT_OFFSET, STANDIN_IMAGE, USERS, Override,
    build_standin_image, e2e_config, make_pki, names_on_loopback, wait_for,
)
from tests.e2e.identity_config import standin_config  # noqa: E402
from tests.e2e.standin import client as idp  # noqa: E402

NAME = f"roundcube-authentik-bench{'-' + INSTANCE if INSTANCE else ''}"
STACK = f"bench{'-' + INSTANCE if INSTANCE else ''}"  # captures (and image tags) are named after it
AUTH_PORT = 19643 + PORT_OFFSET
IMAP_PORT = 19143 + PORT_OFFSET  # the first mode's; each further mode the next port
CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/image:Image"
PROVIDER = "authentik:index/providerOauth2:ProviderOauth2"
USER = "alice@example.test"
CEILING_PASSWORD = "ceiling-password"
CEILING_PASSWD_FILE = "/etc/dovecot/bench-passwords"
SUITES = {
    "tokens": ("introspection", "local", "ceiling"),
    "app-passwords": ("app-password (cached)", "app-password (no cache)", "password ceiling"),
}
# What each suite's ratio line compares: (measured, ceiling).
RATIOS = {"tokens": ("local", "ceiling"), "app-passwords": ("app-password (cached)", "password ceiling")}
RUNS = ((1, 300), (8, 100))
BENCH_USERS = LOAD_USERS  # app passwords: client i logs in as BENCH_USERS[i]
WARMUP = 20
DIRECTORY_SYNC = ROOT / "images" / "postfix" / "directory-sync.py"


@dataclasses.dataclass(frozen=True)
class Target:
    """One mode's Dovecot and what its clients send."""

    port: int
    mechanism: str
    initials: tuple[bytes, ...]  # SASL initial responses; client i sends initials[i % len(initials)]
    ca_file: str | None = None  # implicit TLS (IMAPS) trusting this CA; None: plain IMAP


# -- one login, as cheap as a client can make it -------------------------------------


def _read_until(sock: socket.socket, buffer: bytearray, *ends: bytes) -> bytes:
    while True:
        for line in bytes(buffer).split(b"\r\n")[:-1]:
            if any(line.startswith(end) for end in ends):
                del buffer[: buffer.index(line) + len(line) + 2]
                return line
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buffer.extend(chunk)


_TLS_CONTEXTS: dict[str, ssl.SSLContext] = {}


def _tls_context(ca_file: str) -> ssl.SSLContext:
    """One context per client process (loading the CA is not part of a login); no
    session is ever reused, so each login pays the full handshake."""
    if ca_file not in _TLS_CONTEXTS:
        _TLS_CONTEXTS[ca_file] = ssl.create_default_context(cafile=ca_file)
    return _TLS_CONTEXTS[ca_file]


def login(port: int, mechanism: str, initial: bytes, ca_file: str | None = None) -> float:
    """Seconds for connect, (TLS handshake,) greeting, AUTHENTICATE (SASL-IR), LOGOUT; raises on refusal."""
    started = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), timeout=30) as raw:
        sock = _tls_context(ca_file).wrap_socket(raw, server_hostname=MAIL_HOST) if ca_file else raw
        buffer = bytearray()
        _read_until(sock, buffer, b"* OK")
        sock.sendall(b"a AUTHENTICATE " + mechanism.encode() + b" " + base64.b64encode(initial) + b"\r\n")
        answer = _read_until(sock, buffer, b"a ", b"+")
        if answer.startswith(b"+"):  # a failed XOAUTH2 sends its error as a challenge
            sock.sendall(b"\r\n")
            answer = _read_until(sock, buffer, b"a ")
        if not answer.startswith(b"a OK"):
            raise PermissionError(answer.decode(errors="replace"))
        sock.sendall(b"b LOGOUT\r\n")
        _read_until(sock, buffer, b"b ")
    return time.perf_counter() - started


def _client(port: int, mechanism: str, initial: bytes, count: int, ca_file: str | None = None
            ) -> tuple[list[float], int]:
    durations, errors = [], 0
    for _ in range(count):
        try:
            durations.append(login(port, mechanism, initial, ca_file))
        except (OSError, PermissionError):  # ssl.SSLError is an OSError
            errors += 1
    return durations, errors


def measure(targets: dict[str, Target], clients: int, per_client: int, chunks: int,
            idp_calls: Callable[[], int]) -> dict[str, dict[str, Any]]:
    """`clients` x `per_client` logins per mode, in `chunks` rounds that take turns
    between the modes, so a change in the machine's load (shared machines)
    weighs on every mode alike. Rates are logins over the time spent in that mode."""
    durations: dict[str, list[float]] = {mode: [] for mode in targets}
    errors = dict.fromkeys(targets, 0)
    wall = dict.fromkeys(targets, 0.0)
    calls = dict.fromkeys(targets, 0)
    sizes = [per_client // chunks + (1 if i < per_client % chunks else 0) for i in range(chunks)]
    with ProcessPoolExecutor(max_workers=clients) as pool:
        list(pool.map(_noop, range(clients)))  # processes up before the clock starts
        for size in sizes:
            for mode, target in targets.items():
                initials = [target.initials[i % len(target.initials)] for i in range(clients)]
                before = idp_calls()
                started = time.perf_counter()
                results = list(pool.map(_client, [target.port] * clients, [target.mechanism] * clients, initials,
                                        [size] * clients, [target.ca_file] * clients))
                wall[mode] += time.perf_counter() - started
                calls[mode] += idp_calls() - before
                for done, failed in results:
                    durations[mode].extend(done)
                    errors[mode] += failed
    return {mode: summarize(sorted(durations[mode]), wall[mode], calls[mode], errors[mode], clients, per_client)
            for mode in targets}


def summarize(done: list[float], wall: float, calls: int, errors: int, clients: int, per_client: int
              ) -> dict[str, Any]:
    """One table row's numbers from the sorted durations (seconds) of the successful logins."""
    return {
        "clients": clients,
        "logins": clients * per_client,
        "logins_per_s": round(len(done) / wall, 1) if wall else None,
        "median_ms": round(statistics.median(done) * 1000, 1) if done else None,
        "p95_ms": round(done[max(0, int(len(done) * 0.95) - 1)] * 1000, 1) if done else None,
        "idp_calls": calls,
        "idp_calls_per_login": round(calls / (clients * per_client), 3),
        "errors": errors,
    }


def _noop(_: int) -> None:
    return None


# -- what each mode's Dovecot reads ------------------------------------------------------------


def _tar(files: dict[str, tuple[str, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mode) in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def dovecot_files(declared: Capture) -> dict[str, tuple[str, int]]:
    return {path: (u["content"], int(u.get("permissions", "0644"), 8)) for path, u in declared.uploads("dovecot").items()}


def _before_directory(conf: str, block: list[str]) -> str:
    """`conf` with `block` inserted before the passdb that says who exists (the
    directory's passwd-file, or directory: open's static passdb), i.e. after the deny passdbs."""
    for anchor in ("passdb directory {\n", "passdb mail_domain {\n"):
        if anchor in conf:
            at = conf.index(anchor)
            return conf[:at] + "\n".join(block) + "\n" + conf[at:]
    raise ValueError("no directory passdb in dovecot.conf")


def ceiling_conf(conf: str) -> str:
    """The token suite's ceiling: the local-mode dovecot.conf with a passwd-file passdb in place of OAuth."""
    lines, skipping = [], False
    for line in conf.splitlines():
        if line in ("oauth2 {", "oauth2_local_validation {"):
            skipping = True
        if not skipping:
            lines.append("auth_mechanisms = plain" if line.startswith("auth_mechanisms =") else line)
        if skipping and line == "}":
            skipping = False
    return _before_directory("\n".join(lines) + "\n", [
        "passdb ceiling {", "  driver = passwd-file", f"  passwd_file_path = {CEILING_PASSWD_FILE}", "}"])


def password_ceiling_conf(conf: str) -> str:
    """The app-password suite's ceiling: the same dovecot.conf with the app-password passdb
    (Lua and checker) replaced, in the same place, by a passwd-file of password hashes."""
    start = conf.index("passdb app_password {\n")
    end = conf.index("\n}\n", start) + len("\n}\n")
    return conf[:start] + "\n".join([
        "passdb password_ceiling {",
        "  driver = passwd-file",
        "  mechanisms_filter = plain login",
        f"  passwd_file_path = {CEILING_PASSWD_FILE}",
        "  result_failure = return-fail",
        "}",
    ]) + "\n" + conf[end:]


def _directory_sync_module() -> Any:
    spec = importlib.util.spec_from_file_location("directory_sync", DIRECTORY_SYNC)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def directory_files(declared: Capture, users: list[dict[str, Any]],
                    groups: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """dovecot-users and directory.json as the directory sync writes them for these
    authentik users and groups, with the stack's own sync settings (its own functions)."""
    sync = _directory_sync_module()
    config = sync.parse_config(json.loads(declared.uploads("directory")[layout.DIRECTORY_SYNC_CONFIG]["content"]))
    pks = {user["username"]: index + 1 for index, user in enumerate(users)}
    names = sorted({name for user in users for name in user.get("groups", [])})
    attributes = {group["name"]: group.get("attributes", {}) for group in groups}
    directory = sync.build_directory(
        config,
        [sync.user_from_record({"pk": pks[u["username"]], "username": u["username"], "email": u.get("email"),
                                "is_active": u.get("is_active", True), "groups": u.get("groups", []),
                                "attributes": u.get("attributes", {})}, "benchmark user") for u in users],
        [sync.group_from_record({"pk": name, "name": name, "attributes": attributes.get(name, {}),
                                 "users": [pks[u["username"]] for u in users if name in u.get("groups", [])]},
                                "benchmark group") for name in names],
        {},
    )
    return {
        layout.DOVECOT_USERS_FILE: (sync.render_dovecot_users(config, directory), 0o644),
        layout.DIRECTORY_JSON: (sync.render_directory_json(directory), 0o644),
    }


def password_hashes(engine: docker.DockerClient, image: str, passwords: list[str]) -> list[str]:
    """Each password as `doveadm pw` hashes it with its default scheme, in a throwaway container of the image."""
    script = ('printf "dovecot_config_version = 2.4.0\\ndovecot_storage_version = 2.4.0\\n" '
              '> /etc/dovecot/dovecot.conf; for p in "$@"; do doveadm pw -p "$p"; done')
    remove(engine, f"{NAME}-hash")
    container = engine.containers.create(image, entrypoint=["sh", "-c", script, "sh", *passwords],
                                         name=f"{NAME}-hash", network_disabled=True)
    try:  # not run(remove=True): that leaves the image's VOLUME (/var/mail) behind
        container.start()
        container.wait(timeout=120)
        output = container.logs(stdout=True, stderr=False)
    finally:
        container.remove(force=True, v=True)
    hashes = output.decode().split()
    if len(hashes) != len(passwords) or not all(h.startswith("{") for h in hashes):
        raise RuntimeError(f"doveadm pw: unexpected output {output[:200]!r}")
    return hashes


def hash_scheme(hashed: str) -> str:
    """What a hash says of how it was made, without the salt and digest: `{CRYPT}$2y$05$`."""
    match = re.match(r"\{[^}]*\}(\$[^$]+\$(?:\d+\$)?)?", hashed)
    return match[0] if match else "?"


# -- the containers ------------------------------------------------------------------------


def _slug(mode: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", mode.lower()).strip("-")


def start_dovecot(engine: docker.DockerClient, image: str, network: str, files: dict[str, tuple[str, int]],
                  mode: str, port: int, ca_file: str | None) -> Any:
    api = engine.api
    inside = layout.IMAPS_PORT if ca_file else layout.IMAP_PORT
    created = api.create_container(
        image=image, name=f"{NAME}-dovecot-{_slug(mode)}", ports=[inside],
        host_config=api.create_host_config(port_bindings={f"{inside}/tcp": (LOOPBACK, port)}),
        networking_config=api.create_networking_config({network: api.create_endpoint_config()}),
        detach=True,
    )
    container = engine.containers.get(created["Id"])
    container.put_archive("/", _tar(files))
    container.start()

    def greets() -> bool:
        with socket.create_connection((LOOPBACK, port), timeout=3) as raw:
            sock = _tls_context(ca_file).wrap_socket(raw, server_hostname=MAIL_HOST) if ca_file else raw
            return sock.recv(100).startswith(b"* OK")

    wait_for(greets, f"Dovecot ({mode})", timeout=60)
    return container


def start_standin(engine: docker.DockerClient, network: str, config: dict[str, Any], pki: dict[str, Path]) -> Any:
    api = engine.api
    created = api.create_container(
        image=STANDIN_IMAGE, name=f"{NAME}-standin", command=["/etc/standin/config.json"], ports=[AUTH_PORT],
        host_config=api.create_host_config(port_bindings={f"{AUTH_PORT}/tcp": (LOOPBACK, AUTH_PORT)}),
        networking_config=api.create_networking_config({network: api.create_endpoint_config(aliases=[AUTH_HOST])}),
        detach=True,
    )
    container = engine.containers.get(created["Id"])
    container.put_archive("/", _tar({
        "/etc/standin/config.json": (json.dumps(config), 0o644),
        "/etc/standin/server.pem": (pki["auth_cert"].read_text(), 0o644),
        "/etc/standin/server.key": (pki["auth_key"].read_text(), 0o644),
    }))
    container.start()
    return container


def remove(engine: docker.DockerClient, name: str) -> None:
    for container in engine.containers.list(all=True, filters={"name": f"^/{name}$"}):
        container.remove(force=True, v=True)


def build_dovecot_image(engine: docker.DockerClient, declared: Capture) -> str:
    """Only Dovecot's image, built as the e2e tests build it; its id."""
    wanted = declared.one(CONTAINER, "-dovecot").inputs["image"]
    image = next(r for r in declared.of_type(IMAGE) if r.outputs["repoDigest"] == wanted)
    return build_images(engine, dataclasses.replace(declared, resources=[image]))[wanted]


# -- the run ---------------------------------------------------------------------------------


def token_config(pki: dict[str, Path], mode: str) -> StackConfig:
    """The e2e stack (the dev example with the e2e overrides) for one token mode, plain IMAP on loopback."""
    return e2e_config(MAIN, pki, extra={
        "tls": Override(None, "plain IMAP on loopback: the same transport for every token mode"),
        "clients": Override(None, "no app passwords: they need tls"),
        "jwks_refresh_seconds": Override(None, "the default key refresh"),
        "authentik_url": Override(f"https://{AUTH_HOST}:{AUTH_PORT}", "the benchmark's own stand-in"),
        "access_token_validity": Override("minutes=30", "one token lasts the whole run"),
        "ports": Override({"http": 18999 + PORT_OFFSET, "smtp": None, "submission": None, "imaps": None,
                           "imap": IMAP_PORT}, "only Dovecot's IMAP, on the benchmark's own port"),
        "token_validation": Override(mode, "the mode measured"),
        "authentik_ca_file": Override(str(pki["ca"]), "the benchmark's stand-in has a certificate of its own test CA"),
    })


def app_password_config(pki: dict[str, Path], cache_seconds: int) -> StackConfig:
    """The e2e stack with app passwords (it has tls), only Dovecot's IMAPS published."""
    return e2e_config(MAIN, pki, extra={
        "clients": Override({"app_passwords": True, "cache_seconds": cache_seconds}, "the cache setting measured"),
        "jwks_refresh_seconds": Override(None, "the default key refresh"),
        "authentik_url": Override(f"https://{AUTH_HOST}:{AUTH_PORT}", "the benchmark's own stand-in"),
        "ports": Override({"http": 18999 + PORT_OFFSET, "smtp": None, "submission": None,
                           "imaps": IMAP_PORT + len(SUITES["tokens"]), "imap": None},
                          "only Dovecot's IMAPS, on the benchmark's own port"),
        "authentik_ca_file": Override(str(pki["ca"]), "the benchmark's stand-in has a certificate of its own test CA"),
    })


def app_password_key(user: dict[str, Any]) -> str:
    """A benchmark user's app password (and, in the password ceiling, their password): as long as authentik's."""
    return f"{user['username']}-{secrets.token_urlsafe(30)}"


def run(delay_ms: int, chunks: int, suites: tuple[str, ...] = tuple(SUITES), runs: tuple[tuple[int, int], ...] = RUNS,
        cache_seconds: int = ClientSettings().cache_seconds) -> dict[str, Any]:
    if max(clients for clients, _ in runs) > len(BENCH_USERS):
        raise ValueError(f"at most {len(BENCH_USERS)} clients (one benchmark user each)")
    engine = docker.from_env(timeout=600)
    engine.ping()
    results: dict[str, Any] = {"settings": {
        "idp_delay_ms": delay_ms, "runs": [list(r) for r in runs], "chunks": chunks, "suites": list(suites),
        **({"cache_seconds": cache_seconds} if "app-passwords" in suites else {})}}
    keys = {user["username"]: app_password_key(user) for user in BENCH_USERS[:max(c for c, _ in runs)]}
    with tempfile.TemporaryDirectory() as folder, names_on_loopback():
        pki = make_pki(Path(folder))
        # One application and provider for every mode: later captures keep the first one's
        # generated values (client id and secret), as `pulumi up` keeps them in the stack's state.
        configs: dict[str, StackConfig] = {}
        if "tokens" in suites:
            configs["local"] = token_config(pki, "local")
            configs["introspection"] = token_config(pki, "introspection")
        if "app-passwords" in suites:
            configs["cached"] = app_password_config(pki, cache_seconds)
            configs["no-cache"] = app_password_config(pki, 0)
        declared: dict[str, Capture] = {}
        for name, stack_config in configs.items():
            declared[name] = capture(f"{STACK}-{name}", stack_config, placeholders=False,
                                     earlier=next(iter(declared.values()), None))
        first = next(iter(declared.values()))
        provider = first.one(PROVIDER).inputs
        image = build_dovecot_image(engine, first)
        build_standin_image(engine)
        for leftover in (*(f"dovecot-{_slug(mode)}" for suite in SUITES.values() for mode in suite), "standin", "hash"):
            remove(engine, f"{NAME}-{leftover}")
        for old in engine.networks.list(names=[f"{NAME}-net"]):
            old.remove()
        directory = directory_files(first, USERS, GROUPS)
        modes: dict[str, tuple[dict[str, tuple[str, int]], str, tuple[bytes, ...], str | None]] = {}
        if "app-passwords" in suites:
            hashes = password_hashes(engine, image, list(keys.values()))
            results["settings"]["password_ceiling_scheme"] = hash_scheme(hashes[0])
        network = engine.networks.create(f"{NAME}-net", driver="bridge")
        standin = None
        dovecots: list[Any] = []
        try:
            config = standin_config(first, base_url=f"https://{AUTH_HOST}:{AUTH_PORT}", port=AUTH_PORT,
                                    cert_file="/etc/standin/server.pem", key_file="/etc/standin/server.key",
                                    users=USERS, groups=GROUPS)
            config["tokens"] = [*config["tokens"], *(
                {"identifier": f"bench-{username}", "key": key, "user": username, "intent": "app_password",
                 "expiring": False} for username, key in keys.items())]
            config["answer_delay_ms"] = delay_ms
            standin = start_standin(engine, network.name, config, pki)
            auth_url = f"https://{AUTH_HOST}:{AUTH_PORT}"
            wait_for(lambda: idp.discovery(auth_url, config["applications"][0]["slug"], verify=str(pki["ca"])) != {},
                     "the stand-in")
            if "tokens" in suites:
                token = idp.login_and_get_tokens(auth_url, provider["clientId"], provider["clientSecret"],
                                                 provider["allowedRedirectUris"][0]["url"], "alice", "alice-pw",
                                                 verify=str(pki["ca"]))["access_token"]
                xoauth2 = (f"user={USER}\x01auth=Bearer {token}\x01\x01".encode(),)
                local = {**dovecot_files(declared["local"]), **directory}
                conf, conf_mode = local[layout.DOVECOT_CONF]
                modes["introspection"] = ({**dovecot_files(declared["introspection"]), **directory}, "XOAUTH2",
                                          xoauth2, None)
                modes["local"] = (local, "XOAUTH2", xoauth2, None)
                modes["ceiling"] = ({**local, layout.DOVECOT_CONF: (ceiling_conf(conf), conf_mode),
                                     CEILING_PASSWD_FILE: (f"{USER}:{{PLAIN}}{CEILING_PASSWORD}\n", 0o644)},
                                    "PLAIN", (f"\0{USER}\0{CEILING_PASSWORD}".encode(),), None)
            if "app-passwords" in suites:
                emails = {u["username"]: u["email"] for u in BENCH_USERS}
                plain = tuple(f"\0{emails[username]}\0{key}".encode() for username, key in keys.items())
                tls = {layout.TLS_CERT_FILE: (pki["mail_cert"].read_text(), 0o644),
                       layout.TLS_KEY_FILE: (pki["mail_key"].read_text(), 0o600)}
                cached = {**dovecot_files(declared["cached"]), **directory, **tls}
                conf, conf_mode = cached[layout.DOVECOT_CONF]
                passwords = "".join(f"{emails[username]}:{hashed}\n" for username, hashed in zip(keys, hashes))
                modes["app-password (cached)"] = (cached, "PLAIN", plain, str(pki["ca"]))
                modes["app-password (no cache)"] = ({**dovecot_files(declared["no-cache"]), **directory, **tls},
                                                    "PLAIN", plain, str(pki["ca"]))
                modes["password ceiling"] = ({**cached, layout.DOVECOT_CONF: (password_ceiling_conf(conf), conf_mode),
                                              CEILING_PASSWD_FILE: (passwords, 0o644)}, "PLAIN", plain, str(pki["ca"]))
            targets = {}
            for index, (mode, (files, mechanism, initials, ca_file)) in enumerate(modes.items()):
                port = IMAP_PORT + index
                dovecots.append(start_dovecot(engine, image, network.name, files, mode, port, ca_file))
                target = Target(port, mechanism, initials, ca_file)
                for initial in initials:  # every user once at least; fills the cache where there is one
                    if _client(port, mechanism, initial, max(1, WARMUP // len(initials)), ca_file)[1]:
                        raise RuntimeError(f"{mode}: warm-up logins failed:\n{dovecots[-1].logs().decode()[-3000:]}")
                targets[mode] = target

            def idp_calls() -> int:
                log = standin.logs().decode(errors="replace")
                return log.count("POST /application/o/introspect/") + log.count("POST /application/o/token/")

            for clients, per_client in runs:
                summary = measure(targets, clients, per_client, chunks, idp_calls)
                for mode, result in summary.items():
                    results.setdefault(mode, {})[str(clients)] = result
                    print(f"{mode:<24} {clients} x {per_client:<4} {result['logins_per_s']:7.1f} logins/s  "
                          f"median {result['median_ms']} ms  p95 {result['p95_ms']} ms  "
                          f"idp calls/login {result['idp_calls_per_login']}  errors {result['errors']}", flush=True)
        finally:
            for dovecot in dovecots:
                dovecot.remove(force=True, v=True)
            if standin is not None:
                standin.remove(force=True, v=True)
            network.remove()
    results["ratios"] = {
        f"{measured} / {ceiling}": {
            str(clients): round(results[measured][str(clients)]["logins_per_s"]
                                / results[ceiling][str(clients)]["logins_per_s"], 2)
            for clients, _ in runs
        }
        for suite, (measured, ceiling) in RATIOS.items() if suite in suites
    }
    return results


def table(results: dict[str, Any]) -> str:
    """One Markdown table per suite, each followed by its ratio line."""
    runs = [tuple(r) for r in results["settings"]["runs"]]
    parts = []
    for suite in results["settings"]["suites"]:
        rows = ["| mode | clients × logins | logins/s | median ms | p95 ms | IdP calls/login | errors |",
                "|---|---|---|---|---|---|---|"]
        for mode in SUITES[suite]:
            for clients, per_client in runs:
                r = results[mode][str(clients)]
                rows.append(f"| {mode} | {clients} × {per_client} | {r['logins_per_s']} | {r['median_ms']} | "
                            f"{r['p95_ms']} | {r['idp_calls_per_login']} | {r['errors']} |")
        measured, ceiling = RATIOS[suite]
        ratios = results["ratios"][f"{measured} / {ceiling}"]
        rows += ["", f"{measured} / {ceiling}: " + ", ".join(f"{c} client(s): {v}" for c, v in ratios.items())]
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def parse_runs(text: str) -> tuple[tuple[int, int], ...]:
    """`1x300,8x100` -> ((1, 300), (8, 100)): clients x logins per client."""
    runs = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\d+)\s*", part)
        if not match or not 1 <= int(match[1]) <= len(BENCH_USERS) or int(match[2]) < 1:
            raise argparse.ArgumentTypeError(
                f"expected runs such as 1x300,8x100 (1 to {len(BENCH_USERS)} clients, at least 1 login), got {part!r}")
        runs.append((int(match[1]), int(match[2])))
    return tuple(runs)


def parse_suites(text: str) -> tuple[str, ...]:
    """`tokens,app-passwords` (or `all`) -> the suites, in the order they run."""
    names = tuple(SUITES) if text == "all" else tuple(dict.fromkeys(s.strip() for s in text.split(",")))
    unknown = [name for name in names if name not in SUITES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected all or some of {', '.join(SUITES)}, got {text!r}")
    return tuple(name for name in SUITES if name in names)


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--suites", type=parse_suites, default=tuple(SUITES),
                        help="tokens, app-passwords or both, comma-separated (default: all)")
    parser.add_argument("--runs", type=parse_runs, default=RUNS,
                        help="clients x logins per client, comma-separated (default 1x300,8x100)")
    parser.add_argument("--cache-seconds", type=int, default=ClientSettings().cache_seconds,
                        help="clients.cache_seconds of the app-password (cached) mode (default: the setting's, "
                             f"{ClientSettings().cache_seconds})")
    parser.add_argument("--idp-delay-ms", type=int, default=30, help="the stand-in's answer delay (default 30)")
    parser.add_argument("--chunks", type=int, default=5,
                        help="rounds in which the modes take turns (default 5); the login counts stay the same")
    return parser.parse_args(argv)


def main() -> int:
    args = arguments()
    started = time.monotonic()
    results = run(args.idp_delay_ms, args.chunks, args.suites, args.runs, args.cache_seconds)
    results["settings"]["duration_s"] = round(time.monotonic() - started)
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

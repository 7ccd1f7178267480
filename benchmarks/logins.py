"""Benchmark: IMAP logins per second by token_validation mode, against the ceiling.

    bash scripts/docker-engine.sh start && .venv/bin/python benchmarks/logins.py --json results.json

In one run on one machine it starts the project's Dovecot image with the
program's rendered configuration (the e2e stack's settings, captured through
Pulumi's mocks, no TLS so every mode pays the same transport) next to the
authentik stand-in, whose answers take --idp-delay-ms (default 30 ms, as a real
authentik answers), and measures three modes with the same client:

- introspection: token_validation: introspection (one authentik call per login);
- local:         token_validation: local (Dovecot checks the JWT itself);
- ceiling:       the same image and config with a local password database
                 (passwd-file, AUTHENTICATE PLAIN) instead of OAuth.

Each mode: 1 client x 300 logins and 8 clients x 100 logins (processes, so the
client is not serialised by Python's GIL), each login a new TCP connection
(greeting, AUTHENTICATE with the initial response, LOGOUT). The three Dovecot
containers run side by side and the modes take turns in --chunks rounds, so
the load of a shared machine weighs on each mode alike. It prints a table
and writes JSON: per mode and client count logins_per_s, median_ms, p95_ms,
idp_calls_per_login (introspection requests the stand-in logged during the
run, per login) and errors, plus ratio_local_to_ceiling per client count.

Everything talks to 127.0.0.1 or inside the benchmark's own Docker network;
every loop has a fixed count; every container and the network are removed at
the end. Names and ports follow E2E_INSTANCE / E2E_PORT_OFFSET like the e2e
tests, so checkouts sharing an engine do not collide.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import statistics
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from offline.capture import capture  # noqa: E402
from offline.stack_file import StackConfig  # noqa: E402
from tests.e2e.deploy import build_images  # noqa: E402
from tests.e2e.environment import (  # noqa: E402
    AUTH_HOST, INSTANCE, MAIN, PORT_OFFSET, LOOPBACK, STANDIN_IMAGE, USERS, Override, build_standin_image, e2e_config, make_pki,
    names_on_loopback, wait_for,
)
from tests.e2e.identity_config import standin_config  # noqa: E402
from tests.e2e.standin import client as idp  # noqa: E402

NAME = f"roundcube-authentik-bench{'-' + INSTANCE if INSTANCE else ''}"
AUTH_PORT = 19643 + PORT_OFFSET
IMAP_PORT = 19143 + PORT_OFFSET
CONTAINER = "docker:index/container:Container"
PROVIDER = "authentik:index/providerOauth2:ProviderOauth2"
USER = "alice@example.test"
CEILING_PASSWORD = "ceiling-password"
RUNS = ((1, 300), (8, 100))
MODES = ("introspection", "local", "ceiling")
WARMUP = 20


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


def login(port: int, mechanism: str, initial: bytes) -> float:
    """Seconds for connect, greeting, AUTHENTICATE (SASL-IR), LOGOUT; raises on refusal."""
    started = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), timeout=30) as sock:
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


def _client(port: int, mechanism: str, initial: bytes, count: int) -> tuple[list[float], int]:
    durations, errors = [], 0
    for _ in range(count):
        try:
            durations.append(login(port, mechanism, initial))
        except (OSError, PermissionError):
            errors += 1
    return durations, errors


def measure(targets: dict[str, tuple[int, str, bytes]], clients: int, per_client: int, chunks: int,
            idp_calls: Any) -> dict[str, dict[str, Any]]:
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
            for mode, (port, mechanism, initial) in targets.items():
                before = idp_calls()
                started = time.perf_counter()
                results = list(pool.map(_client, [port] * clients, [mechanism] * clients, [initial] * clients,
                                        [size] * clients))
                wall[mode] += time.perf_counter() - started
                calls[mode] += idp_calls() - before
                for done, failed in results:
                    durations[mode].extend(done)
                    errors[mode] += failed
    summary = {}
    for mode in targets:
        done = sorted(durations[mode])
        summary[mode] = {
            "clients": clients,
            "logins": clients * per_client,
            "logins_per_s": round(len(done) / wall[mode], 1),
            "median_ms": round(statistics.median(done) * 1000, 1) if done else None,
            "p95_ms": round(done[max(0, int(len(done) * 0.95) - 1)] * 1000, 1) if done else None,
            "idp_calls_per_login": round(calls[mode] / (clients * per_client), 2),
            "errors": errors[mode],
        }
    return summary


def _noop(_: int) -> None:
    return None


# -- the containers ------------------------------------------------------------------------


def _tar(files: dict[str, tuple[str, int]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mode) in files.items():
            data = content.encode()
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def dovecot_files(declared: Any) -> dict[str, tuple[str, int]]:
    return {path: (u["content"], int(u.get("permissions", "0644"), 8)) for path, u in declared.uploads("dovecot").items()}


def ceiling_files(local: dict[str, tuple[str, int]]) -> dict[str, tuple[str, int]]:
    """The local-mode dovecot.conf with a passwd-file passdb in place of OAuth."""
    conf, mode = local["/etc/dovecot/dovecot.conf"]
    lines, skipping = [], False
    for line in conf.splitlines():
        if line in ("oauth2 {", "oauth2_local_validation {"):
            skipping = True
        if not skipping:
            lines.append("auth_mechanisms = plain" if line.startswith("auth_mechanisms =") else line)
        if skipping and line == "}":
            skipping = False
    lines += ["passdb passwd-file {", "  passwd_file_path = /etc/dovecot/users", "}"]
    return {
        "/etc/dovecot/dovecot.conf": ("\n".join(lines) + "\n", mode),
        "/etc/dovecot/users": (f"{USER}:{{PLAIN}}{CEILING_PASSWORD}\n", 0o644),
        **{path: value for path, value in local.items() if path.endswith(".pem")},
    }


def start_dovecot(engine: docker.DockerClient, image: str, network: str, files: dict[str, tuple[str, int]],
                  mode: str, port: int) -> Any:
    api = engine.api
    created = api.create_container(
        image=image, name=f"{NAME}-dovecot-{mode}", ports=[143],
        host_config=api.create_host_config(port_bindings={"143/tcp": (LOOPBACK, port)}),
        networking_config=api.create_networking_config({network: api.create_endpoint_config()}),
        detach=True,
    )
    container = engine.containers.get(created["Id"])
    container.put_archive("/", _tar(files))
    container.start()

    def greets() -> bool:
        with socket.create_connection((LOOPBACK, port), timeout=3) as sock:
            return sock.recv(100).startswith(b"* OK")

    wait_for(greets, "Dovecot", timeout=60)
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


# -- the run ---------------------------------------------------------------------------------


def bench_config(pki: dict[str, Path], mode: str) -> StackConfig:
    """The e2e stack (the dev example with the e2e overrides) for one mode, plain IMAP on loopback."""
    return e2e_config(MAIN, pki, extra={
        "tls": Override(None, "plain IMAP on loopback: the same transport for every mode"),
        "jwks_refresh_seconds": Override(None, "the default key refresh"),
        "authentik_url": Override(f"https://{AUTH_HOST}:{AUTH_PORT}", "the benchmark's own stand-in"),
        "access_token_validity": Override("minutes=30", "one token lasts the whole run"),
        "ports": Override({"http": 18999 + PORT_OFFSET, "smtp": None, "submission": None, "imaps": None,
                           "imap": IMAP_PORT}, "only Dovecot's IMAP, on the benchmark's own port"),
        "token_validation": Override(mode, "the mode measured"),
        "authentik_ca_file": Override(str(pki["ca"]), "the benchmark's stand-in has a certificate of its own test CA"),
    })


def run(delay_ms: int, chunks: int) -> dict[str, Any]:
    engine = docker.from_env(timeout=600)
    engine.ping()
    results: dict[str, Any] = {"settings": {"idp_delay_ms": delay_ms, "runs": [list(r) for r in RUNS],
                                            "chunks": chunks}}
    with tempfile.TemporaryDirectory() as folder, names_on_loopback():
        pki = make_pki(Path(folder))
        declared = {mode: capture(f"bench-{mode}", bench_config(pki, mode), placeholders=False)
                    for mode in ("local", "introspection")}
        # One provider for both modes: the introspection capture uses the local one's credentials.
        provider = declared["local"].one(PROVIDER).inputs
        images = build_images(engine, declared["local"])
        image = images[declared["local"].one(CONTAINER, "-dovecot").inputs["image"]]
        build_standin_image(engine)
        for leftover in (*(f"dovecot-{mode}" for mode in MODES), "standin"):
            remove(engine, f"{NAME}-{leftover}")
        for old in engine.networks.list(names=[f"{NAME}-net"]):
            old.remove()
        network = engine.networks.create(f"{NAME}-net", driver="bridge")
        standin = None
        dovecots: list[Any] = []
        try:
            config = standin_config(declared["local"], base_url=f"https://{AUTH_HOST}:{AUTH_PORT}", port=AUTH_PORT,
                                    cert_file="/etc/standin/server.pem", key_file="/etc/standin/server.key",
                                    users=USERS)
            config["answer_delay_ms"] = delay_ms
            standin = start_standin(engine, network.name, config, pki)
            auth_url = f"https://{AUTH_HOST}:{AUTH_PORT}"
            wait_for(lambda: idp.discovery(auth_url, config["applications"][0]["slug"], verify=str(pki["ca"])) != {},
                     "the stand-in")
            token = idp.login_and_get_tokens(auth_url, provider["clientId"], provider["clientSecret"],
                                             provider["allowedRedirectUris"][0]["url"], "alice", "alice-pw",
                                             verify=str(pki["ca"]))["access_token"]
            xoauth2 = f"user={USER}\x01auth=Bearer {token}\x01\x01".encode()
            introspection_files = dovecot_files(declared["introspection"])
            local_files = dovecot_files(declared["local"])
            # The introspection stack's own credentials would be unknown to the stand-in's provider.
            introspection_conf = introspection_files["/etc/dovecot/dovecot.conf"][0]
            ids = declared["introspection"].one(PROVIDER).inputs
            introspection_files["/etc/dovecot/dovecot.conf"] = (
                introspection_conf.replace(ids["clientId"], provider["clientId"])
                .replace(ids["clientSecret"], provider["clientSecret"]), 0o600)
            modes = {
                "introspection": (introspection_files, "XOAUTH2", xoauth2),
                "local": (local_files, "XOAUTH2", xoauth2),
                "ceiling": (ceiling_files(local_files), "PLAIN", f"\0{USER}\0{CEILING_PASSWORD}".encode()),
            }
            targets = {}
            for index, (mode, (files, mechanism, initial)) in enumerate(modes.items()):
                port = IMAP_PORT + index
                dovecots.append(start_dovecot(engine, image, network.name, files, mode, port))
                if _client(port, mechanism, initial, WARMUP)[1]:
                    raise RuntimeError(f"{mode}: warm-up logins failed:\n{dovecots[-1].logs().decode()[-3000:]}")
                targets[mode] = (port, mechanism, initial)

            def idp_calls() -> int:
                return standin.logs().decode(errors="replace").count("POST /application/o/introspect/")

            for clients, per_client in RUNS:
                summary = measure(targets, clients, per_client, chunks, idp_calls)
                for mode, result in summary.items():
                    results.setdefault(mode, {})[str(clients)] = result
                    print(f"{mode:<14} {clients} x {per_client:<4} {result['logins_per_s']:7.1f} logins/s  "
                          f"median {result['median_ms']} ms  p95 {result['p95_ms']} ms  "
                          f"idp calls/login {result['idp_calls_per_login']}  errors {result['errors']}", flush=True)
        finally:
            for dovecot in dovecots:
                dovecot.remove(force=True, v=True)
            if standin is not None:
                standin.remove(force=True, v=True)
            network.remove()
    results["ratio_local_to_ceiling"] = {
        str(clients): round(results["local"][str(clients)]["logins_per_s"]
                            / results["ceiling"][str(clients)]["logins_per_s"], 2)
        for clients, _ in RUNS
    }
    return results


def table(results: dict[str, Any]) -> str:
    rows = ["| mode | clients x logins | logins/s | median ms | p95 ms | IdP calls/login | errors |",
            "|---|---|---|---|---|---|---|"]
    for mode in ("introspection", "local", "ceiling"):
        for clients, per_client in RUNS:
            r = results[mode][str(clients)]
            rows.append(f"| {mode} | {clients} x {per_client} | {r['logins_per_s']} | {r['median_ms']} | "
                        f"{r['p95_ms']} | {r['idp_calls_per_login']} | {r['errors']} |")
    ratios = ", ".join(f"{c} client(s): {v}" for c, v in results["ratio_local_to_ceiling"].items())
    return "\n".join(rows) + f"\n\nlocal / ceiling: {ratios}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--idp-delay-ms", type=int, default=30, help="the stand-in's answer delay (default 30)")
    parser.add_argument("--chunks", type=int, default=5,
                        help="rounds in which the modes take turns (default 5); the login counts stay the same")
    args = parser.parse_args()
    results = run(args.idp_delay_ms, args.chunks)
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

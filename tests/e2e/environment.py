"""The end-to-end environment: the deployed stack and the authentik stand-in.

What runs: the Docker resources the program declares for an `e2e` stack (the
dev example stack with test ports, a test CA and a short access-token
lifetime), captured through Pulumi's mocks and created on the real engine;
and the authentik stand-in, configured from the program's declared authentik
resources, on the program's private network under authentik's host name.

Traffic stays on this machine: the host reaches containers only through ports
published on 127.0.0.1, and the containers talk among themselves on the
network the deployment created.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import ssl
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import docker
import requests

from offline.capture import PROJECT_DIR, Capture, SecretMaker, capture, read_stack_config
from tests.e2e.deploy import Deployment, build_images, deploy, leftovers
from tests.e2e.identity_config import application_from_capture, standin_config
from tests.e2e.pki import TestCA

# Checkouts that share one engine (parallel work on one machine) each set
# E2E_INSTANCE (a short name) and E2E_PORT_OFFSET: own names, own ports.
INSTANCE = os.environ.get("E2E_INSTANCE", "")
PORT_OFFSET = int(os.environ.get("E2E_PORT_OFFSET", "0"))
STACK = f"e2e-{INSTANCE}" if INSTANCE else "e2e"
PREFIX = f"roundcube-authentik-{STACK}"
AUTH_HOST = "auth.example.test"
MAIL_HOST = "mail.example.test"
MAIL_DOMAIN = "example.test"
LOOPBACK = "127.0.0.1"
PORTS = {"http": 18080 + PORT_OFFSET, "smtp": 12525 + PORT_OFFSET, "submission": 15587 + PORT_OFFSET,
         "imaps": 19993 + PORT_OFFSET, "imap": None}
AUTH_PORT = 19443 + PORT_OFFSET
AUTH_URL = f"https://{AUTH_HOST}:{AUTH_PORT}"
ROUNDCUBE_URL = f"http://localhost:{PORTS['http']}"
ACCESS_TOKEN_SECONDS = 30
JWKS_REFRESH_SECONDS = 5
# The second, smaller deployment: the same stack with token_validation:
# introspection, of which only Dovecot runs (tests/e2e/test_introspection.py).
INTROSPECTION_STACK = f"{STACK}-introspection"
INTROSPECTION_IMAPS_PORT = 19994 + PORT_OFFSET
GROUP = "webmail-users"
STANDIN_IMAGE = f"roundcube-authentik/authentik-standin:{STACK}"
STANDIN_NAME = f"{PREFIX}-authentik-standin"
ARTIFACTS = PROJECT_DIR / "artifacts" / "e2e"

USERS = [
    {"username": "alice", "name": "Alice Liddell", "email": f"alice@{MAIL_DOMAIN}", "password": "alice-pw", "groups": [GROUP]},
    {"username": "bob", "name": "Bob Builder", "email": f"bob@{MAIL_DOMAIN}", "password": "bob-pw", "groups": [GROUP]},
    {"username": "carol", "name": "Carol Outsider", "email": f"carol@{MAIL_DOMAIN}", "password": "carol-pw", "groups": []},
]
# A second application in the same authentik: its tokens must not open mailboxes.
OTHER_CLIENT = {"client_id": "other-client-id-0123456789", "client_secret": "other-client-secret-0123456789abcdef"}
OTHER_REDIRECT = "https://other.example.test/callback"


@dataclass
class Stack:
    capture: Capture
    deployment: Deployment
    ca_file: Path
    standin: Any  # docker Container
    standin_config: dict[str, Any]
    client: docker.DockerClient
    tls: dict[str, Path]
    # What earlier stand-in containers of this session logged (before a restart).
    standin_history: str = ""
    # The same stack with token_validation: introspection (its provider is in the stand-in too).
    introspection_capture: Capture | None = None

    @property
    def provider(self) -> dict[str, Any]:
        return self.capture.one("authentik:index/providerOauth2:ProviderOauth2").inputs

    @property
    def client_id(self) -> str:
        return self.provider["clientId"]

    @property
    def client_secret(self) -> str:
        return self.provider["clientSecret"]

    @property
    def redirect_uri(self) -> str:
        return self.provider["allowedRedirectUris"][0]["url"]

    def logs(self, service: str) -> str:
        if service == "authentik":
            self.standin.reload()
            return self.standin_history + self.standin.logs().decode(errors="replace")
        return self.deployment.logs(service)

    @contextlib.contextmanager
    def authentik_unreachable(self) -> Iterator[None]:
        """authentik's host is up but its server is not: connections are refused.

        The stand-in (and the tokens it issued) leaves the network; a container
        with nothing listening takes authentik's name, so the name still resolves
        on the private network and no lookup leaves it.
        """
        self.standin.reload()
        networks = [self.client.networks.get(name) for name in self.standin.attrs["NetworkSettings"]["Networks"]]
        for network in networks:
            network.disconnect(self.standin)
        api = self.client.api
        created = api.create_container(
            image=STANDIN_IMAGE,
            name=f"{STANDIN_NAME}-down",
            entrypoint=["python3", "-c", "import time; time.sleep(600)"],
            networking_config=api.create_networking_config(
                {networks[0].name: api.create_endpoint_config(aliases=[AUTH_HOST])}
            ),
            detach=True,
        )
        placeholder = self.client.containers.get(created["Id"])
        try:
            for network in networks[1:]:
                network.connect(placeholder, aliases=[AUTH_HOST])
            placeholder.start()
            yield
        finally:
            placeholder.remove(force=True)
            for network in networks:
                network.connect(self.standin, aliases=[AUTH_HOST])

    def restart_standin(self, config: dict[str, Any]) -> None:
        """Runs the stand-in with another config (as if an admin changed authentik)."""
        self.standin_history = self.logs("authentik")
        self.standin.remove(force=True)
        self.standin = start_standin(self.client, self.deployment, config, self.tls)
        wait_for_standin(self.ca_file)


def e2e_config(ca_file: Path, mail_cert: Path, mail_key: Path, access_token_seconds: int = ACCESS_TOKEN_SECONDS) -> dict[str, str]:
    """The dev example stack, with this test's ports, CA and lifetimes."""
    config = read_stack_config(PROJECT_DIR / "stacks" / "Pulumi.dev.yaml", SecretMaker(placeholders=False))
    ns = "roundcube-authentik"
    config.update(
        {
            f"{ns}:roundcube_url": ROUNDCUBE_URL,
            f"{ns}:authentik_url": AUTH_URL,
            # The stand-in is on the private network under authentik's name:
            # the containers use the public URL, never the Docker host.
            f"{ns}:authentik_internal_url": "null",
            f"{ns}:authentik_ca_file": str(ca_file),
            f"{ns}:mail_domain": MAIL_DOMAIN,
            f"{ns}:mail_hostname": MAIL_HOST,
            f"{ns}:app_name": "Webmail (e2e)",
            f"{ns}:app_slug": "webmail-e2e",
            f"{ns}:allowed_group": GROUP,
            f"{ns}:access_token_validity": f"seconds={access_token_seconds}",
            f"{ns}:refresh_token_validity": "hours=1",
            f"{ns}:publish_address": LOOPBACK,
            f"{ns}:ports": json.dumps(PORTS),
            f"{ns}:tls": json.dumps({"cert_file": str(mail_cert), "key_file": str(mail_key)}),
            f"{ns}:protect_volumes": "false",
            # Key rotation tests wait for jwks-sync's next round (60 s by default).
            f"{ns}:jwks_refresh_seconds": str(JWKS_REFRESH_SECONDS),
        }
    )
    return config


def introspection_config(base: dict[str, str]) -> dict[str, str]:
    """The e2e stack with token_validation: introspection, as its own application and ports."""
    ns = "roundcube-authentik"
    return {
        **base,
        f"{ns}:token_validation": "introspection",
        f"{ns}:app_name": "Webmail (e2e, introspection)",
        f"{ns}:app_slug": "webmail-e2e-introspection",
        f"{ns}:ports": json.dumps({"http": PORTS["http"] + 1, "smtp": None, "submission": None,
                                   "imaps": INTROSPECTION_IMAPS_PORT, "imap": None}),
    }


# -- host-side name resolution ------------------------------------------------------

_real_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    # The test process reaches the published ports under the names in the
    # certificates; nothing else is redirected.
    if host in (AUTH_HOST, MAIL_HOST):
        host = LOOPBACK
    return _real_getaddrinfo(host, *args, **kwargs)


@contextlib.contextmanager
def names_on_loopback() -> Iterator[None]:
    socket.getaddrinfo = _loopback_getaddrinfo  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = _real_getaddrinfo  # type: ignore[assignment]


# -- the stand-in --------------------------------------------------------------------


def _tar_files(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def build_standin_image(client: docker.DockerClient) -> None:
    context = PROJECT_DIR / "tests" / "e2e"
    client.images.build(path=str(context), dockerfile="standin/Dockerfile", tag=STANDIN_IMAGE, rm=True, forcerm=True)


def start_standin(client: docker.DockerClient, deployment: Deployment, config: dict[str, Any], tls: dict[str, Path]):
    api = client.api
    network = deployment.networks[0].name
    config = {**config, "tls": {"cert_file": "/etc/standin/server.pem", "key_file": "/etc/standin/server.key"}}
    created = api.create_container(
        image=STANDIN_IMAGE,
        name=STANDIN_NAME,
        command=["/etc/standin/config.json"],  # the image runs `python3 -m standin`
        ports=[AUTH_PORT],
        host_config=api.create_host_config(port_bindings={f"{AUTH_PORT}/tcp": (LOOPBACK, AUTH_PORT)}),
        networking_config=api.create_networking_config(
            {network: api.create_endpoint_config(aliases=[AUTH_HOST])}
        ),
        detach=True,
    )
    container = client.containers.get(created["Id"])
    container.put_archive(
        "/",
        _tar_files(
            {
                "/etc/standin/config.json": json.dumps(config).encode(),
                "/etc/standin/server.pem": tls["cert"].read_bytes(),
                "/etc/standin/server.key": tls["key"].read_bytes(),
            }
        ),
    )
    container.start()
    return container


def wait_for(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as err:  # not up yet
            last = err
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})")


def wait_for_standin(ca_file: Path) -> None:
    def discovery() -> bool:
        url = f"{AUTH_URL}/application/o/webmail-e2e/.well-known/openid-configuration"
        return requests.get(url, verify=str(ca_file), timeout=3).status_code == 200

    wait_for(discovery, "authentik stand-in")


def _banner(port: int, tls_context: ssl.SSLContext | None = None) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=3) as sock:
        if tls_context is not None:
            with tls_context.wrap_socket(sock, server_hostname=MAIL_HOST) as tls:
                return tls.recv(200).startswith(b"* OK")
        return sock.recv(200).startswith(b"220")


def make_pki(folder: Path) -> dict[str, Path]:
    ca = TestCA(folder)
    auth = ca.issue(AUTH_HOST)
    mail = ca.issue(MAIL_HOST)
    return {"ca": ca.ca_file, "auth_cert": auth.cert_file, "auth_key": auth.key_file,
            "mail_cert": mail.cert_file, "mail_key": mail.key_file}


def remove_leftovers(engine: docker.DockerClient) -> None:
    """Clears what a previous run, killed mid-way, left behind."""
    for leftover in leftovers(engine, PREFIX):
        kind, name = leftover.split(" ", 1)
        {"container": lambda n: engine.containers.get(n).remove(force=True),
         "network": lambda n: engine.networks.get(n).remove(),
         "volume": lambda n: engine.volumes.get(n).remove(force=True)}[kind](name)


@contextlib.contextmanager
def running_stack(
    engine: docker.DockerClient, pki: dict[str, Path], access_token_seconds: int = ACCESS_TOKEN_SECONDS
) -> Iterator[Stack]:
    """Deploys the e2e stack and the stand-in; removes all of it on the way out, whatever happens."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    remove_leftovers(engine)
    stack_config = e2e_config(pki["ca"], pki["mail_cert"], pki["mail_key"], access_token_seconds)
    declared = capture(STACK, stack_config, placeholders=False)
    introspecting = capture(INTROSPECTION_STACK, introspection_config(stack_config), placeholders=False)
    second_app, second_mappings = application_from_capture(introspecting)
    images = build_images(engine, declared)
    build_standin_image(engine)
    deployment = deploy(engine, declared, images)
    stack: Stack | None = None
    try:
        config = standin_config(
            declared,
            base_url=AUTH_URL,
            port=AUTH_PORT,
            cert_file="/etc/standin/server.pem",
            key_file="/etc/standin/server.key",
            users=USERS,
            extra_applications=[other_application(), second_app],
        )
        # The same program declares the same dovecotprofile mapping for the second application.
        known = {m["scope_name"]: m["expression"] for m in config["scope_mappings"]}
        assert all(known.get(m["scope_name"]) == m["expression"] for m in second_mappings), second_mappings
        tls = {"cert": pki["auth_cert"], "key": pki["auth_key"]}
        stack = Stack(declared, deployment, pki["ca"], start_standin(engine, deployment, config, tls), config, engine, tls,
                      introspection_capture=introspecting)
        wait_for_standin(pki["ca"])
        wait_for(lambda: requests.get(ROUNDCUBE_URL, timeout=3).status_code == 200, "Roundcube")
        wait_for(lambda: _banner(PORTS["smtp"]), "Postfix")
        imaps = ssl.create_default_context(cafile=str(pki["ca"]))
        wait_for(lambda: _banner(PORTS["imaps"], imaps), "Dovecot")
        yield stack
    finally:
        _keep_logs(deployment, stack)
        if stack is not None:
            try:
                stack.standin.remove(force=True)
            except docker.errors.NotFound:
                pass
        deployment.remove()


def _keep_logs(deployment: Deployment, stack: Stack | None) -> None:
    """Saves each daemon's log under artifacts/e2e/ for reading after the run."""
    for service in ("dovecot", "postfix", "roundcube"):
        try:
            (ARTIFACTS / f"{service}.log").write_text(deployment.logs(service))
        except (docker.errors.NotFound, AssertionError):
            pass
    if stack is not None:
        try:
            (ARTIFACTS / "authentik-standin.log").write_text(stack.logs("authentik"))
        except docker.errors.NotFound:
            pass


def other_application() -> dict[str, Any]:
    return {
        "name": "Other app",
        "slug": "other",
        "launch_url": "https://other.example.test",
        "group": None,
        "provider": {
            "name": "Other app",
            **OTHER_CLIENT,
            "client_type": "confidential",
            "allowed_redirect_uris": [{"matching_mode": "strict", "url": OTHER_REDIRECT}],
            "scopes": ["openid", "email", "offline_access"],
            "access_token_validity": "minutes=10",
            "refresh_token_validity": "days=1",
            "include_claims_in_id_token": True,
            "sub_mode": "hashed_user_id",
            "issuer_mode": "per_provider",
            "signing_key": True,
            "allowed_group": None,
        },
    }

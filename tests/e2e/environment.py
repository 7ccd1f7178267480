"""The end-to-end environment: the deployed stack and the authentik stand-in.

What runs is what users run: the program's declarations for the example
stack `stacks/Pulumi.dev.yaml`, read as the Pulumi CLI reads it
(offline.stack_file), changed only by the overrides listed in
`E2E_OVERRIDES`, each with the reason the test machine needs it. They are
captured through Pulumi's mocks and created on the real engine, next to the
authentik stand-in, which is configured from the program's declared
authentik resources and joins the program's private network under
authentik's host name.

Trust: the main stack, like the prod example, has no `authentik_ca_file`:
the containers trust authentik's certificate through the system CA store,
to which the test CA is added the way a public CA is present, in a thin
layer over each product image (tests/e2e/deploy.py); the product images are
not changed. The `authentik_ca_file` path runs as a second, smaller
deployment (test_ca_file.py) on the unchanged product images.

Traffic stays on this machine: the host reaches containers only through ports
published on 127.0.0.1, and the containers talk among themselves on the
network the deployment created. Two test services join that network: a DNS
zone (dnsmasq serving the stack's own `dns_records` and nothing else, the only
resolver of every container) and a receiving SMTP server standing for the
rest of the internet (the relay host of the e2e stack).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import docker
import requests

from components.mailserver import DIRECTORY_SYNC_CHECK
from offline.capture import PROJECT_DIR, Capture, capture, read_stack
from offline.stack_file import StackConfig
from tests.e2e.deploy import Deployment, build_images, deploy, leftovers
from tests.e2e.identity_config import application_from_capture, standin_config
from tests.e2e.pki import TestCA
from tests.testnet import zone

EXAMPLE_STACK = "dev"  # the example stack the e2e stacks start from
AUTH_HOST = "auth.example.test"
MAIL_HOST = "mail.example.test"
MAIL_DOMAIN = "example.test"
LOOPBACK = "127.0.0.1"
ACCESS_TOKEN_SECONDS = 30
GROUP = "webmail-users"
ARTIFACTS = PROJECT_DIR / "artifacts" / "e2e"
STANDIN_CONFIG = "/etc/standin/config.json"
STANDIN_ISSUED_LOG = "/tmp/standin-issued.jsonl"

# Checkouts that share one engine (parallel work on one machine) each set
# E2E_INSTANCE (a short name) and E2E_PORT_OFFSET: own names, own ports.
INSTANCE = os.environ.get("E2E_INSTANCE", "")
PORT_OFFSET = int(os.environ.get("E2E_PORT_OFFSET", "0"))


@dataclass(frozen=True)
class Layout:
    """One deployed e2e stack's names and published ports."""

    stack: str
    ports: Mapping[str, int | None]
    auth_port: int

    @property
    def prefix(self) -> str:
        return f"roundcube-authentik-{self.stack}"

    @property
    def auth_url(self) -> str:
        return f"https://{AUTH_HOST}:{self.auth_port}"

    @property
    def roundcube_url(self) -> str:
        return f"http://localhost:{self.ports['http']}"

    @property
    def standin_name(self) -> str:
        return f"{self.prefix}-authentik-standin"

    @property
    def standin_image(self) -> str:
        return f"roundcube-authentik/authentik-standin:{self.stack}"


def layout(name: str, offset: int) -> Layout:
    # No stack's name is the start of another's: leftovers are found by name prefix.
    stack = "-".join(part for part in ("e2e", INSTANCE, name) if part)
    base = PORT_OFFSET + offset
    return Layout(
        stack=stack,
        ports={"http": 18080 + base, "smtp": 12525 + base, "submission": 15587 + base, "imaps": 19993 + base, "imap": None},
        auth_port=19443 + base,
    )


MAIN = layout("main", 0)
# The second, smaller deployment: the same stack with token_validation:
# introspection, of which only Dovecot runs (tests/e2e/test_introspection.py).
INTROSPECTION = layout("introspection", 3)
INTROSPECTION_STACK = INTROSPECTION.stack
INTROSPECTION_IMAPS_PORT = INTROSPECTION.ports["imaps"]
JWKS_REFRESH_SECONDS = 5
DIRECTORY_INTERVAL = 10
APP_PASSWORD_CACHE_SECONDS = 10
STACK = MAIN.stack
PREFIX = MAIN.prefix
PORTS = dict(MAIN.ports)
AUTH_PORT = MAIN.auth_port
AUTH_URL = MAIN.auth_url
ROUNDCUBE_URL = MAIN.roundcube_url
STANDIN_IMAGE = MAIN.standin_image
STANDIN_NAME = MAIN.standin_name
TESTNET_IMAGE = f"roundcube-authentik/testnet:{'e2e-' + INSTANCE if INSTANCE else 'e2e'}"
# The receiving SMTP server's name on the private network: relay_host of the e2e stacks.
RELAY_HOST = "relay.example.test"

# A distribution list (a group with the attribute mail_address): Alice and Bob.
STAFF_LIST = f"staff@{MAIL_DOMAIN}"
GROUPS = [{"name": "staff", "attributes": {"mail_address": STAFF_LIST}}]
USERS: list[dict[str, Any]] = [
    {"username": "alice", "name": "Alice Liddell", "email": f"alice@{MAIL_DOMAIN}", "password": "alice-pw",
     "groups": [GROUP, "staff"], "attributes": {"mail_aliases": [f"al@{MAIL_DOMAIN}"]}},
    {"username": "bob", "name": "Bob Builder", "email": f"bob@{MAIL_DOMAIN}", "password": "bob-pw",
     "groups": [GROUP, "staff"]},
    # Her own quota from authentik; a malformed alias (another domain) that the directory skips.
    {"username": "frank", "name": "Frank Quota", "email": f"frank@{MAIL_DOMAIN}", "password": "frank-pw",
     "groups": [GROUP], "attributes": {"mail_quota": "1M", "mail_aliases": ["frank@elsewhere.example"]}},
    # Renamed during the tests: her mail follows her.
    {"username": "heidi", "name": "Heidi Renamed", "email": f"heidi@{MAIL_DOMAIN}", "password": "heidi-pw",
     "groups": [GROUP]},
    {"username": "carol", "name": "Carol Outsider", "email": f"carol@{MAIL_DOMAIN}", "password": "carol-pw", "groups": []},
    # In the allowed group, but with an email in another domain: no mailbox here.
    {"username": "dave", "name": "Dave Elsewhere", "email": "dave@elsewhere.example", "password": "dave-pw", "groups": [GROUP]},
]
# People of the load test (tests/e2e/test_load.py): one per concurrent client,
# as Dovecot allows each user only a few connections from one address.
LOAD_USERS: list[dict[str, Any]] = [
    {"username": f"load{i:02d}", "name": f"Load {i:02d}", "email": f"load{i:02d}@{MAIL_DOMAIN}",
     "password": f"load{i:02d}-pw", "groups": [GROUP]}
    for i in range(50)
]
USERS += LOAD_USERS
# A second application in the same authentik: its tokens must not open mailboxes.
OTHER_CLIENT = {"client_id": "other-client-id-0123456789", "client_secret": "other-client-secret-0123456789abcdef"}
OTHER_REDIRECT = "https://other.example.test/callback"


# -- what the e2e stack changes in the example stack, and why -------------------------


@dataclass(frozen=True)
class Override:
    value: Any  # text or a dict, as a stack file holds it; None: the setting is removed
    reason: str


def e2e_overrides(where: Layout, pki: Mapping[str, Path], access_token_seconds: int = ACCESS_TOKEN_SECONDS) -> dict[str, Override]:
    """The only differences between the dev example stack and the e2e stack."""
    return {
        "roundcube_url": Override(
            where.roundcube_url, "the stack's own HTTP port, so it never meets a dev stack or another checkout's"),
        "ports": Override(
            dict(where.ports),
            "own host ports for the same reason; imaps published because tls is set (below)"),
        "authentik_url": Override(
            where.auth_url,
            "the stand-in on the private network under authentik's name and its own HTTPS port; the dev "
            "stack's http://localhost:9000 is an authentik on the developer's machine"),
        "authentik_internal_url": Override(
            None,
            "the dev stack reaches authentik on the Docker host through host-gateway; the traffic rules keep "
            "the containers off the host's bridge address, and with the stand-in on the private network the "
            "public URL works from inside"),
        "tls": Override(
            {"cert_file": str(pki["mail_cert"]), "key_file": str(pki["mail_key"])},
            "the IMAPS and STARTTLS paths the prod stack uses (certificate from the test CA)"),
        "allowed_group": Override(
            GROUP, "the group binding the prod stack declares, so group enforcement is tested as declared"),
        "access_token_validity": Override(
            f"seconds={access_token_seconds}",
            "the refresh and expiry tests wait for the access token to expire; 10 minutes is too long to wait"),
        "jwks_refresh_seconds": Override(
            str(JWKS_REFRESH_SECONDS),
            "the key-rotation test waits for the JWKS sync's next round; 60 s by default"),
        "directory": Override(
            {"source": "authentik", "postmaster": f"alice@{MAIL_DOMAIN}", "interval": DIRECTORY_INTERVAL},
            "the deactivation and rename tests wait for the directory sync's next round; 60 s by default"),
        "clients": Override(
            {"app_passwords": True, "cache_seconds": APP_PASSWORD_CACHE_SECONDS},
            "the prod stack's app passwords (they need tls, set above); the revocation test waits out the "
            "cache, 60 s by default"),
        "relay_host": Override(
            f"[{RELAY_HOST}]:25",
            "mail for other domains goes to the test's receiving SMTP server on the private network, never "
            "to the internet (the dev stack delivers directly)"),
    }


def apply_overrides(config: StackConfig, overrides: Mapping[str, Override]) -> StackConfig:
    for name, override in overrides.items():
        config = config.without(name) if override.value is None else config.with_values(**{name: override.value})
    return config


def e2e_config(where: Layout, pki: Mapping[str, Path], access_token_seconds: int = ACCESS_TOKEN_SECONDS,
               extra: Mapping[str, Override] = {}) -> StackConfig:
    """The dev example stack with the e2e overrides (and a test's `extra` ones)."""
    overrides = {**e2e_overrides(where, pki, access_token_seconds), **extra}
    return apply_overrides(read_stack(EXAMPLE_STACK), overrides)


@dataclass
class Stack:
    capture: Capture
    deployment: Deployment
    ca_file: Path
    standin: Any  # docker Container
    standin_config: dict[str, Any]
    client: docker.DockerClient
    tls: dict[str, Path]
    where: Layout = MAIN
    config: StackConfig | None = None  # the stack config the program ran with
    trusted_ca: Path | None = None  # a CA added to each image's system store (see build_images)
    # What earlier stand-in containers of this session logged and issued (before a restart).
    standin_history: str = ""
    issued_history: list[dict[str, str]] = field(default_factory=list)

    @property
    def relay(self) -> Any:
        """The receiving SMTP server (tests/testnet/sink.py)."""
        return next(c for c in self.deployment.test_services if c.name.endswith("-test-relay"))

    def relayed(self) -> list[tuple[dict[str, Any], bytes]]:
        """(envelope, message bytes as received) of every message the relay host got."""
        listing = self.relay.exec_run(["ls", zone.RECEIVER_MAILDIR]).output.decode().split()
        found = []
        for name in sorted(n for n in listing if n.endswith(".eml")):
            raw = self.relay.exec_run(["cat", f"{zone.RECEIVER_MAILDIR}/{name}"]).output
            envelope = self.relay.exec_run(["cat", f"{zone.RECEIVER_MAILDIR}/{name[:-4]}.json"]).output
            found.append((json.loads(envelope), raw))
        return found
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

    @property
    def slug(self) -> str:
        return self.capture.one("authentik:index/application:Application").inputs["slug"]

    def build_images(self, declared: Capture) -> dict[str, str]:
        """The images of `declared`, built as this stack's were (system CA store included)."""
        return build_images(self.client, declared, trusted_ca=self.trusted_ca)

    def logs(self, service: str) -> str:
        if service == "authentik":
            self.standin.reload()
            return self.standin_history + self.standin.logs().decode(errors="replace")
        return self.deployment.logs(service)

    def issued(self) -> list[dict[str, str]]:
        """Every credential the stand-in handed out this session: codes, access, refresh and id tokens."""
        return self.issued_history + _read_issued(self.standin)

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
            image=self.where.standin_image,
            name=f"{self.where.standin_name}-down",
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
        self.issued_history = self.issued()
        self.standin.remove(force=True)
        self.standin = start_standin(self.client, self.deployment, config, self.tls, self.where)
        wait_for_standin(self.ca_file, self.where, self.slug)


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


def start_test_services(
    client: docker.DockerClient, declared: Capture, prefix: str
) -> Callable[[Deployment], list[str]]:
    """The test's DNS zone and receiving SMTP server, on the deployment's network (see deploy())."""

    def start(deployment: Deployment) -> list[str]:
        api = client.api
        network = deployment.networks[0].name

        def create(name: str, entrypoint: list[str], files: dict[str, bytes], aliases: list[str], **host: Any) -> Any:
            created = api.create_container(
                image=TESTNET_IMAGE,
                name=f"{prefix}-{name}",
                entrypoint=entrypoint,
                working_dir=zone.RECEIVER_DIR,
                host_config=api.create_host_config(**host),
                networking_config=api.create_networking_config(
                    {network: api.create_endpoint_config(aliases=aliases or None)}
                ),
                detach=True,
            )
            container = client.containers.get(created["Id"])
            deployment.test_services.append(container)
            container.put_archive("/", _tar_files(files))
            container.start()
            container.reload()
            return container

        dns = create(
            "test-dns", zone.DNS_COMMAND, {zone.DNSMASQ_CONF: zone.dnsmasq_conf(declared.exports["dns_records"]).encode()}, []
        )
        resolver = [dns.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]]
        create("test-relay", zone.RECEIVER_COMMAND, {zone.RECEIVER_SINK: zone.sink_source()}, [RELAY_HOST], dns=resolver)
        return resolver

    return start


def build_standin_image(client: docker.DockerClient, where: Layout = MAIN) -> None:
    context = PROJECT_DIR / "tests" / "e2e"
    client.images.build(path=str(context), dockerfile="standin/Dockerfile", tag=where.standin_image, rm=True, forcerm=True)


def start_standin(client: docker.DockerClient, deployment: Deployment, config: dict[str, Any], tls: dict[str, Path],
                  where: Layout = MAIN):
    api = client.api
    network = deployment.networks[0].name
    config = {**config, "tls": {"cert_file": "/etc/standin/server.pem", "key_file": "/etc/standin/server.key"}}
    created = api.create_container(
        image=where.standin_image,
        name=where.standin_name,
        command=[STANDIN_CONFIG],  # the image runs `python3 -m standin`
        environment={"STANDIN_ISSUED_LOG": STANDIN_ISSUED_LOG},
        ports=[where.auth_port],
        host_config=api.create_host_config(port_bindings={f"{where.auth_port}/tcp": (LOOPBACK, where.auth_port)}),
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
                STANDIN_CONFIG: json.dumps(config).encode(),
                "/etc/standin/server.pem": tls["cert"].read_bytes(),
                "/etc/standin/server.key": tls["key"].read_bytes(),
            }
        ),
    )
    container.start()
    return container


def _read_issued(container: Any) -> list[dict[str, str]]:
    try:
        stream, _ = container.get_archive(STANDIN_ISSUED_LOG)
    except docker.errors.NotFound:  # nothing issued yet
        return []
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile(tar.getmembers()[0])
        assert member is not None
        return [json.loads(line) for line in member.read().decode().splitlines() if line]


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


def wait_for_standin(ca_file: Path, where: Layout = MAIN, slug: str = "webmail-dev") -> None:
    def discovery() -> bool:
        url = f"{where.auth_url}/application/o/{slug}/.well-known/openid-configuration"
        return requests.get(url, verify=str(ca_file), timeout=3).status_code == 200

    wait_for(discovery, "authentik stand-in")


def banner(port: int, tls_context: ssl.SSLContext | None = None) -> bool:
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


def remove_leftovers(engine: docker.DockerClient, where: Layout = MAIN) -> None:
    """Clears what a previous run, killed mid-way, left behind."""
    for leftover in leftovers(engine, where.prefix):
        kind, name = leftover.split(" ", 1)
        {"container": lambda n: engine.containers.get(n).remove(force=True),
         "network": lambda n: engine.networks.get(n).remove(),
         "volume": lambda n: engine.volumes.get(n).remove(force=True)}[kind](name)


def standin_config_for(declared: Capture, where: Layout = MAIN, also: list[Capture] = []) -> dict[str, Any]:
    """The stand-in's configuration: the application and provider exactly as `declared` registers them
    (and those of the captures in `also`, other stacks of the same program sharing this authentik)."""
    config = standin_config(
        declared,
        base_url=where.auth_url,
        port=where.auth_port,
        cert_file="/etc/standin/server.pem",
        key_file="/etc/standin/server.key",
        users=USERS,
        groups=GROUPS,
        extra_applications=[other_application(), *(application_from_capture(c)[0] for c in also)],
    )
    # The same program declares the same dovecotprofile mapping for every application.
    known = {m["scope_name"]: m["expression"] for m in config["scope_mappings"]}
    for other in also:
        assert all(known.get(m["scope_name"]) == m["expression"] for m in application_from_capture(other)[1])
    return config


def introspection_config(pki: Mapping[str, Path], main: StackConfig) -> StackConfig:
    """The e2e stack with token_validation: introspection, as its own application and names,
    using the main stack's stand-in."""
    return apply_overrides(main, {
        "token_validation": Override("introspection", "the mode under test"),
        "app_name": Override("Webmail (e2e, introspection)", "its own application in the shared stand-in"),
        "app_slug": Override("webmail-e2e-introspection", "its own application in the shared stand-in"),
        "roundcube_url": Override(INTROSPECTION.roundcube_url, "its own names and ports"),
        "ports": Override(dict(INTROSPECTION.ports, smtp=None, submission=None), "only Dovecot runs"),
        "directory": Override("open", "only Dovecot runs, no directory sync; the main stack tests the directory"),
        "clients": Override({"app_passwords": False}, "app passwords need the directory; the main stack tests them"),
    })


@contextlib.contextmanager
def running_stack(
    engine: docker.DockerClient,
    pki: dict[str, Path],
    access_token_seconds: int = ACCESS_TOKEN_SECONDS,
    *,
    where: Layout = MAIN,
    extra: Mapping[str, Override] = {},
    trust_test_ca_in_system_store: bool = True,
) -> Iterator[Stack]:
    """Deploys the e2e stack and the stand-in; removes all of it on the way out, whatever happens.

    trust_test_ca_in_system_store: add the test CA to each container's system
    CA store (as a public CA is), for stacks without authentik_ca_file.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    remove_leftovers(engine, where)
    stack_config = e2e_config(where, pki, access_token_seconds, extra)
    declared = capture(where.stack, stack_config, placeholders=False)
    # The main stack's stand-in also knows the introspection stack's application.
    introspecting = capture(INTROSPECTION_STACK, introspection_config(pki, stack_config), placeholders=False) \
        if where == MAIN else None
    images = build_images(engine, declared, trusted_ca=pki["ca"] if trust_test_ca_in_system_store else None)
    build_standin_image(engine, where)
    zone.build_image(engine, TESTNET_IMAGE)
    deployment = deploy(engine, declared, images, start_test_services(engine, declared, where.prefix))
    stack: Stack | None = None
    try:
        config = standin_config_for(declared, where, [] if introspecting is None else [introspecting])
        tls = {"cert": pki["auth_cert"], "key": pki["auth_key"]}
        standin = start_standin(engine, deployment, config, tls, where)
        stack = Stack(declared, deployment, pki["ca"], standin, config, engine, tls, where, stack_config,
                      trusted_ca=pki["ca"] if trust_test_ca_in_system_store else None,
                      introspection_capture=introspecting)
        wait_for_standin(pki["ca"], where, stack.slug)
        wait_for(lambda: requests.get(where.roundcube_url, timeout=3).status_code == 200, "Roundcube")
        if where.ports.get("smtp"):
            wait_for(lambda: banner(where.ports["smtp"]), "Postfix")
        imaps = ssl.create_default_context(cafile=str(pki["ca"]))
        wait_for(lambda: banner(where.ports["imaps"], imaps), "Dovecot")
        opendkim = deployment.container("opendkim")
        wait_for(lambda: opendkim.exec_run(["/usr/local/bin/healthcheck"]).exit_code == 0, "OpenDKIM")
        if any(name.endswith("-directory") for name in deployment.containers):
            # Its first round ran before the stand-in was up; the next one, an interval later, fills the maps.
            sync = deployment.container("directory")
            wait_for(lambda: sync.exec_run(DIRECTORY_SYNC_CHECK.command[1:]).exit_code == 0, "the directory sync")
        yield stack
    finally:
        keep_logs(deployment, stack, where)
        if stack is not None:
            try:
                stack.standin.remove(force=True)
            except docker.errors.NotFound:
                pass
        deployment.remove()


def keep_logs(deployment: Any, stack: Stack | None, where: Layout,
              services: Iterable[str] = ("dovecot", "postfix", "roundcube", "opendkim", "directory")) -> None:
    """Saves each daemon's log (a container's or a service's) under artifacts/e2e/<stack>/."""
    folder = ARTIFACTS / where.stack
    folder.mkdir(parents=True, exist_ok=True)
    for service in services:
        try:
            (folder / f"{service}.log").write_text(deployment.logs(service))
        except (docker.errors.APIError, AssertionError):  # never deployed, or already gone
            pass
    if stack is not None:
        try:
            (folder / "authentik-standin.log").write_text(stack.logs("authentik"))
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

"""Helpers of the daemon tests (see conftest.py for the fixtures).

Real daemons, in the project's own images, on the real Docker engine.

The images are built from images/<service> exactly as the program builds
them; the rendered files are put into each container before it starts, as the
docker provider's `uploads` do; the TLS files are read-only binds, as in
components/mailserver.py. Every Docker object is named `rca-daemon-test-...`
and removed when its fixture ends, whatever happened.

Two stacks of settings: `dev` (plain HTTP authentik, no TLS) and `prod`
(authentik over HTTPS signed by its own CA, TLS for IMAPS and submission).
authentik itself is played by tests/daemons/fake_authentik.php on the test's
own network: its introspection endpoint, and an inactive answer to anything
else (e.g. Roundcube's token request).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import secrets
import socket
import string
import tarfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import docker
import docker.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from components import containers as carriers
from components import service as declared
from components.render import layout
from components.render.dns import dkim_txt_value, dns_records
from components.render.directory import render_directory_sync_config
from components.render.dovecot import (
    render_app_password_check_config,
    render_dovecot_conf,
    render_introspection_filter_config,
    render_jwks_sync_config,
)
from components.render.opendkim import render_opendkim_conf, render_opendkim_unbound_conf
from components.render.policyd_spf import render_policyd_spf_conf
from components.render.postfix import render_postfix_main_cf, render_postfix_master_cf
from components.render.roundcube import render_roundcube_config
from components.mailserver import DIRECTORY_SYNC_CHECK
from components.webmail import LOGIN_PAGE_CHECK
from components.settings import Settings, load_settings
from offline.stack_file import read_stack_text, settings_document
from tests.e2e.readback import parse_go_duration
from tests.testnet import zone

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# Checkouts that share one engine set E2E_INSTANCE: own container names, own image tags.
INSTANCE = os.environ.get("E2E_INSTANCE", "")
PREFIX = f"rca-daemon-test-{INSTANCE}-" if INSTANCE else "rca-daemon-test-"
IMAGE_TAG = f"test-{INSTANCE}" if INSTANCE else "test"
# Or a whole name prefix of its own (e.g. "rca-pg-dev-"), for an engine whose
# users agreed on name spaces: containers, networks and volumes start with
# it, and the images are tagged `<prefix>test`.
if os.environ.get("DAEMON_TEST_PREFIX"):
    PREFIX = os.environ["DAEMON_TEST_PREFIX"]
    IMAGE_TAG = f"{PREFIX}test"
BASE_IMAGE = "debian:trixie-slim"
# postgres: Roundcube's shared database when several replicas run (deployment: swarm).
SERVICES = ("dovecot", "postfix", "roundcube", "opendkim", "postgres", "balancer")
WWW_DATA_GID = 33  # Debian's fixed id, as in components/containers.py
FAKE_AUTHENTIK_SCRIPT = "/srv/fake_authentik.php"
FAKE_AUTHENTIK_PEM = "/srv/authentik.pem"
STARTUP_SECONDS = 60

# Users of the fake authentik and their access tokens. Bob's token is long
# like authentik's JWTs (~1800 characters), to cross Postfix's default line
# length limit when sent inline on the AUTH line. They are shaped like JWTs
# (authentik's access tokens always are; the fake does not check signatures);
# REFRESH_TOKEN is opaque like authentik's refresh tokens, and the fake, like
# authentik's introspection, reports it active.
ALICE = "alice@example.com"
BOB = "bob@example.com"
CAROL = "Carol@Example.COM"  # authentik keeps an email's capitals; Dovecot lower-cases logins
# An authentik user whose email is in another domain: a valid token, but no mailbox here.
DAVE = "dave@elsewhere.example"


def _opaque(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _token(length: int) -> str:
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"fake","typ":"JWT"}').decode().rstrip("=")
    body = max(16, length - len(header) - 2 - 43)
    return f"{header}.{_opaque(body, string.ascii_letters + string.digits + '-_')}.{_opaque(43, string.ascii_letters + '-_')}"


# Deactivated in authentik's directory (DIRECTORY); the fake still vouches for
# a token of hers, as an access token stays valid until it expires.
ERIN = "erin@example.com"
REFRESH_TOKEN = _opaque(128)
TOKENS = {_token(120): ALICE, _token(1800): BOB, _token(120): CAROL, _token(120): DAVE, _token(120): ERIN,
          REFRESH_TOKEN: ALICE}
TOKEN_OF = {user: token for token, user in list(TOKENS.items())[:5]}


# -- files ---------------------------------------------------------------------


@dataclass
class Upload:
    content: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def tar_of(files: dict[str, Upload]) -> bytes:
    """A tar to extract at / : the files, plus the folders of ours they need."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folders = sorted(
            {str(parent) for path in files for parent in Path(path).parents if str(parent).startswith("/etc/roundcube-authentik")}
        )
        for folder in folders:
            info = tarfile.TarInfo(folder.lstrip("/"))
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, upload in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size = len(upload.content)
            info.mode = upload.mode
            info.uid, info.gid = upload.uid, upload.gid
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(upload.content))
    return buffer.getvalue()


# -- throwaway PKI ---------------------------------------------------------------


@dataclass
class Pki:
    folder: Path
    authentik_ca: Path       # the CA a prod stack trusts for authentik
    authentik_server: Path   # the fake authentik's certificate chain + key (one PEM)
    other_ca: Path           # a CA that signed nothing the stacks see
    mail_cert: Path          # the mail host's certificate (IMAPS, STARTTLS)
    mail_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: Optional[tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = None,
    dns_names: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), critical=False
            )
        )
    return builder.sign(signing_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:

    def ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        return _certificate(name, key), key

    def write(name: str, data: bytes, mode: int = 0o644) -> Path:
        path = folder / name
        path.write_bytes(data)
        path.chmod(mode)
        return path

    authentik_ca = ca("rca test authentik CA")
    other_ca = ca("rca test unrelated CA")
    mail_ca = ca("rca test mail CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("authentik", server_key, authentik_ca, ("authentik",))
    mail_key = ec.generate_private_key(ec.SECP256R1())
    mail = _certificate("mail.example.com", mail_key, mail_ca, ("mail.example.com",))
    pem = serialization.Encoding.PEM
    return Pki(
        folder=folder,
        authentik_ca=write("authentik-ca.pem", authentik_ca[0].public_bytes(pem)),
        authentik_server=write("authentik.pem", server.public_bytes(pem) + _pem_key(server_key)),
        other_ca=write("other-ca.pem", other_ca[0].public_bytes(pem)),
        mail_cert=write("mail-cert.pem", mail.public_bytes(pem) + mail_ca[0].public_bytes(pem)),
        mail_key=write("mail-key.pem", _pem_key(mail_key), 0o600),
    )


# -- stacks of settings --------------------------------------------------------


def _alphanumeric(length: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


@dataclass
class Variant:
    name: str
    settings: Settings
    client_id: str
    client_secret: str
    des_key: str
    fake_listen: str  # where the fake authentik listens, matching settings.authentik_url
    dkim_key: rsa.RSAPrivateKey  # as pulumi-tls makes it: RSA 2048, PKCS#1 PEM
    api_key: str = ""  # the directory sync's authentik API token (directory: authentik)

    @property
    def dkim_private_pem(self) -> bytes:
        return self.dkim_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    @property
    def dkim_public_pem(self) -> str:
        return self.dkim_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def dovecot_conf(self, settings: Optional[Settings] = None) -> str:
        return render_dovecot_conf(settings or self.settings, self.client_id, self.client_secret)

    def roundcube_config(self) -> str:
        return render_roundcube_config(self.settings, self.client_id, self.client_secret, self.des_key)

    def dovecot_files(self, settings: Optional[Settings] = None) -> dict[str, Upload]:
        settings = settings or self.settings
        files = {layout.DOVECOT_CONF: Upload(self.dovecot_conf(settings).encode(), 0o600)}
        if settings.token_validation == "local":
            files[layout.JWKS_SYNC_CONFIG] = Upload(render_jwks_sync_config(settings, self.client_id).encode())
        else:
            files[layout.INTROSPECTION_FILTER_CONFIG] = Upload(render_introspection_filter_config(settings).encode())
        if settings.clients.app_passwords:
            files[layout.APP_PASSWORD_CHECK_CONFIG] = Upload(
                render_app_password_check_config(settings, self.client_id, self.client_secret).encode(), 0o600
            )
        if settings.authentik_ca_file is not None:
            files[layout.AUTHENTIK_CA_FILE] = Upload(settings.authentik_ca_file.read_bytes())
        return files

    def postfix_files(self) -> dict[str, Upload]:
        return {
            layout.POSTFIX_MAIN_CF: Upload(render_postfix_main_cf(self.settings).encode()),
            layout.POSTFIX_MASTER_CF: Upload(render_postfix_master_cf(self.settings).encode()),
            layout.POLICYD_SPF_CONF: Upload(render_policyd_spf_conf(self.settings).encode()),
        }

    def opendkim_files(self) -> dict[str, Upload]:
        """As components/mailserver.py uploads them: the key owned by opendkim, 0600."""
        return {
            layout.OPENDKIM_CONF: Upload(render_opendkim_conf(self.settings).encode()),
            layout.OPENDKIM_UNBOUND_CONF: Upload(render_opendkim_unbound_conf().encode()),
            layout.dkim_key_file(self.settings.dkim_selector): Upload(
                self.dkim_private_pem, 0o600, layout.OPENDKIM_UID, layout.OPENDKIM_GID
            ),
        }

    def directory_files(self) -> dict[str, Upload]:
        """As components/mailserver.py uploads them for the directory sync: the key its user's alone."""
        files = {
            layout.DIRECTORY_SYNC_CONFIG: Upload(render_directory_sync_config(self.settings).encode()),
            layout.DIRECTORY_TOKEN_FILE: Upload(
                self.api_key.encode(), 0o600, layout.DIRECTORY_UID, layout.DIRECTORY_GID
            ),
        }
        if self.settings.authentik_ca_file is not None:
            files[layout.AUTHENTIK_CA_FILE] = Upload(self.settings.authentik_ca_file.read_bytes())
        return files

    def roundcube_files(self) -> dict[str, Upload]:
        files = {layout.ROUNDCUBE_CONFIG: Upload(self.roundcube_config().encode(), 0o640, 0, WWW_DATA_GID)}
        if self.settings.authentik_ca_file is not None:
            files[layout.AUTHENTIK_CA_FILE] = Upload(self.settings.authentik_ca_file.read_bytes())
        return files

    def tls_binds(self) -> dict[str, dict[str, str]]:
        """Read-only binds of the TLS files, as components/mailserver.py declares them."""
        if self.settings.tls is None:
            return {}
        return {
            str(self.settings.tls.cert_file): {"bind": layout.TLS_CERT_FILE, "mode": "ro"},
            str(self.settings.tls.key_file): {"bind": layout.TLS_KEY_FILE, "mode": "ro"},
        }


def make_variant(name: str, pki: Pki, **overrides: Any) -> Variant:
    # These stacks ask (fake) authentik on every login; tests/daemons/test_dovecot_local.py
    # covers the default, local validation, with real signed tokens.
    # The standalone tests' Dovecots have no directory: every address of the domain exists.
    config: dict[str, Any] = {"mail_domain": "example.com", "token_validation": "introspection", "directory": "open"}
    if name == "dev":
        config.update(dev=True, roundcube_url="http://webmail.localhost:8080", authentik_url="http://authentik:9000")
        listen = "tcp://0.0.0.0:9000"
    elif name == "prod":
        config.update(
            roundcube_url="https://webmail.example.com",
            authentik_url="https://authentik:8443",
            authentik_ca_file=str(pki.authentik_ca),
            tls={"cert_file": str(pki.mail_cert), "key_file": str(pki.mail_key)},
            app_name='Mail "Prod" \\ Webmail',
        )
        listen = "tls://0.0.0.0:8443"
    else:
        raise ValueError(name)
    config.update(overrides)
    # Written as a stack file and read as the Pulumi CLI hands it over.
    stack = read_stack_text(settings_document("roundcube-authentik", config), "roundcube-authentik")
    settings = load_settings(stack.values, stack.project)
    return Variant(
        name=name,
        settings=settings,
        client_id=_alphanumeric(40),
        client_secret=_alphanumeric(128),
        des_key=_alphanumeric(24),
        fake_listen=listen,
        dkim_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        api_key=_alphanumeric(60),
    )


# -- docker ------------------------------------------------------------------------


def _build(service: str) -> tuple[str, float]:
    client = docker.from_env(timeout=1800)
    tag = f"roundcube-authentik/{service}:{IMAGE_TAG}"
    started = time.monotonic()
    try:
        client.images.build(
            path=str(ROOT / "images" / service),
            tag=tag,
            buildargs={"BASE_IMAGE": BASE_IMAGE},
            pull=False,  # no registry here: the base image is local
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as err:
        log = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in err.build_log)
        raise RuntimeError(f"building images/{service} failed: {err}\n{log[-6000:]}") from None
    finally:
        client.close()
    return tag, time.monotonic() - started


def build_images(docker_client: docker.DockerClient) -> dict[str, str]:
    """Builds the service images and the test network's image (cached by the engine after the first run)."""
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"the base image {BASE_IMAGE} is not in the engine; import it first (see .ci/run)")
    with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
        results = dict(zip(SERVICES, pool.map(_build, SERVICES)))
    for service, (tag, seconds) in results.items():
        print(f"image {tag} ready in {seconds:.1f}s")
    built = {service: tag for service, (tag, _) in results.items()}
    built["testnet"] = zone.build_image(docker_client, f"roundcube-authentik/testnet:{IMAGE_TAG}", BASE_IMAGE)
    return built


class Resources:
    """Every Docker object a fixture made, removed again by `close`."""

    def __init__(self, client: docker.DockerClient, label: str) -> None:
        self.client = client
        self.label = f"{PREFIX}{label}-{uuid.uuid4().hex[:8]}"
        self.containers: list[Any] = []
        self.networks: list[Any] = []
        self.volumes: list[Any] = []

    def name(self, what: str) -> str:
        return f"{self.label}-{what}"

    def network(self) -> Any:
        network = self.client.networks.create(self.name("net"), driver="bridge")
        self.networks.append(network)
        return network

    def volume(self, what: str) -> Any:
        volume = self.client.volumes.create(self.name(what))
        self.volumes.append(volume)
        return volume

    def container(
        self,
        what: str,
        image: str,
        files: dict[str, Upload],
        network: Any = None,
        alias: Optional[str] = None,
        start: bool = True,
        **kwargs: Any,
    ) -> Any:
        """create -> put_archive -> start: what the docker provider's uploads do.

        With read_only (as hardened() gives), the files go where the program
        puts them: into a never-started config carrier's anonymous volumes,
        mounted read-only into this container (components/containers.py).
        """
        if files and kwargs.get("read_only"):
            carrier = self.client.containers.create(
                image,
                name=self.name(f"{what}-config"),
                network_mode="none",
                mounts=[docker.types.Mount(f, None, type="volume") for f in carriers.config_folders(files)],
            )
            self.containers.append(carrier)
            carrier.put_archive("/", tar_of(files))
            kwargs["volumes_from"] = [f"{carrier.id}:ro"]
            files = {}
        if network is not None:
            kwargs["network"] = network.name
            kwargs["networking_config"] = {
                network.name: self.client.api.create_endpoint_config(aliases=[alias] if alias else None)
            }
        if alias:
            kwargs.setdefault("hostname", alias)
        container = self.client.containers.create(image, name=self.name(what), **kwargs)
        self.containers.append(container)
        if files:
            container.put_archive("/", tar_of(files))
        if start:
            container.start()
        return container

    def close(self) -> None:
        problems = []
        for container in reversed(self.containers):
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as err:
                problems.append(str(err))
        for network in self.networks:
            try:
                network.remove()
            except docker.errors.APIError as err:
                problems.append(str(err))
        for volume in self.volumes:
            try:
                volume.remove(force=True)
            except docker.errors.APIError as err:
                problems.append(str(err))
        if problems:
            raise RuntimeError("cleanup left Docker objects behind: " + "; ".join(problems))


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_once(
    resources: Resources,
    image: str,
    command: list[str],
    files: dict[str, Upload],
    entrypoint: Optional[list[str]] = None,
    **kwargs: Any,
) -> Run:
    """Runs one command in a fresh container holding the files; stdout and stderr apart."""
    container = resources.container(
        f"run-{uuid.uuid4().hex[:6]}", image, files, entrypoint=entrypoint or [], command=command, **kwargs
    )
    result = container.wait(timeout=300)
    return Run(
        exit_code=result["StatusCode"],
        stdout=container.logs(stdout=True, stderr=False).decode(errors="replace"),
        stderr=container.logs(stdout=False, stderr=True).decode(errors="replace"),
    )


def container_logs(container: Any) -> str:
    try:
        return container.logs().decode(errors="replace")[-8000:]
    except docker.errors.APIError as err:
        return f"(no logs: {err})"


def published_port(container: Any, port: int) -> int:
    container.reload()
    return int(container.ports[f"{port}/tcp"][0]["HostPort"])


def wait_until(what: str, check: Callable[[], bool], containers: list[Any], seconds: float = STARTUP_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, EOFError) as err:
            last = err
        for container in containers:
            container.reload()
            if container.status == "exited":
                pytest.fail(f"{container.name} exited while waiting for {what}:\n{container_logs(container)}")
        time.sleep(0.3)
    logs = "\n".join(f"=== {c.name}\n{container_logs(c)}" for c in containers)
    pytest.fail(f"timed out waiting for {what} (last error: {last}):\n{logs}")


def banner(port: int, expect: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(512).startswith(expect)


def exec_in(container: Any, command: list[str]) -> str:
    result = container.exec_run(command, demux=False)
    output = result.output.decode(errors="replace")
    assert result.exit_code == 0, f"{command} in {container.name} failed ({result.exit_code}):\n{output}"
    return output


# -- a running stack -----------------------------------------------------------------


@dataclass
class Stack:
    variant: Variant
    resources: Resources
    network: Any
    authentik: Any
    dovecot: Any
    postfix: Any
    roundcube: Any
    opendkim: Any
    dns: Any           # the test zone's dnsmasq, the only resolver Postfix and OpenDKIM reach
    sender: "OutsideSender"
    directory_sync: Any = None  # directory: authentik
    ports: dict[str, int] = field(default_factory=dict)

    def introspection_requests(self) -> list[dict[str, Any]]:
        return introspection_requests(self.authentik)

    def logs(self) -> str:
        return "\n".join(
            f"=== {c.name}\n{container_logs(c)}"
            for c in (self.authentik, self.dovecot, self.postfix, self.roundcube, self.opendkim, self.dns)
        )

    def zone(self) -> dict[str, str]:
        """TXT records the test zone serves: name -> value."""
        return self.sender.zone_txt | {
            r["name"]: r["value"] for r in dns_records(self.variant.settings, self.public_keys()) if r["type"] == "TXT"
        }

    def public_keys(self) -> dict[str, str]:
        return {self.variant.settings.dkim_selector: self.variant.dkim_public_pem}


@dataclass
class OutsideSender:
    """Another domain on the internet, sending to the stack's port 25 (its key signs with dkimpy)."""

    domain: str
    selector: str
    key: rsa.RSAPrivateKey
    client_address: str  # where its SMTP connections come from, as Postfix sees them

    @property
    def private_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )

    @property
    def zone_txt(self) -> dict[str, str]:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        return {
            f"{self.selector}._domainkey.{self.domain}": dkim_txt_value(public),
            self.domain: f"v=spf1 ip4:{self.client_address} -all",
        }


def introspection_requests(authentik: Any) -> list[dict[str, Any]]:
    """What the fake authentik was asked, oldest first, but the directory sync's API reads."""
    lines = authentik.logs(stdout=True, stderr=False).decode(errors="replace").splitlines()
    return [entry for entry in map(json.loads, lines)
            if "request" in entry and not entry["request"].startswith("GET /api/v3/")]


FAKE_JWKS = "/srv/jwks.json"
FAKE_DIRECTORY = "/srv/directory.json"


def _user(pk: int, username: str, email: str, active: bool = True, **attributes: Any) -> dict[str, Any]:
    """A user as authentik's API lists it (include_groups=false)."""
    return {"pk": pk, "username": username, "name": username.title(), "is_active": active, "email": email,
            "attributes": attributes, "groups": [], "groups_obj": None, "type": "internal",
            "uid": hashlib.sha256(username.encode()).hexdigest(), "path": "users"}


STAFF = "staff@example.com"  # a list: alice and bob
# authentik's directory for the prod stack (directory: authentik), as the fake serves it.
DIRECTORY: dict[str, list[dict[str, Any]]] = {
    "users": [
        _user(1, "alice", ALICE, mail_aliases=["al@example.com"]),
        _user(2, "bob", BOB),
        _user(3, "carol", CAROL),
        _user(4, "dave", DAVE),  # another domain: no mailbox here
        _user(5, "erin", ERIN, active=False),  # deactivated in authentik
        _user(6, "frank", "frank@example.com", mail_quota="1M"),
        # Malformed attributes: skipped one by one, the mailbox stays.
        _user(7, "grace", "grace@example.com", mail_quota="lots", mail_aliases=["grace@elsewhere.example", "g@example.com"]),
    ],
    "groups": [
        {"pk": str(uuid.uuid5(uuid.NAMESPACE_URL, "staff")), "name": "staff", "attributes": {"mail_address": STAFF},
         "users": [1, 2], "users_obj": None, "is_superuser": False, "roles": [], "parent": None},
    ],
}


def set_directory(authentik: Any, directory: Optional[dict[str, Any]]) -> None:
    """What the fake's directory API serves from now on; None: HTTP 503 (authentik failing)."""
    if directory is None:
        exec_in(authentik, ["rm", "-f", FAKE_DIRECTORY])
    else:
        authentik.put_archive("/", tar_of({FAKE_DIRECTORY: Upload(json.dumps(directory).encode())}))


def start_fake_authentik(
    resources: Resources, images: dict[str, str], network: Any, variant: Variant, pki: Pki,
    jwks: Optional[dict[str, Any]] = None, **kwargs: Any,
) -> Any:
    """The fake authentik; with `jwks`, it also serves that JWKS (see set_jwks), and the
    directory (DIRECTORY, see set_directory) to the variant's API key."""
    files = {
        FAKE_AUTHENTIK_SCRIPT: Upload((HERE / "fake_authentik.php").read_bytes()),
        FAKE_AUTHENTIK_PEM: Upload(pki.authentik_server.read_bytes(), 0o600),
        FAKE_DIRECTORY: Upload(json.dumps(DIRECTORY).encode()),
    }
    if jwks is not None:
        files[FAKE_JWKS] = Upload(json.dumps(jwks).encode())
    return resources.container(
        "authentik",
        images["roundcube"],
        files,
        network=network,
        alias="authentik",
        entrypoint=["php", FAKE_AUTHENTIK_SCRIPT],
        environment={
            "FAKE_LISTEN": variant.fake_listen,
            "FAKE_CERT": FAKE_AUTHENTIK_PEM,
            "FAKE_CLIENT": f"{variant.client_id}:{variant.client_secret}",
            "FAKE_TOKENS": json.dumps(TOKENS),
            "FAKE_API_KEY": variant.api_key,
            "FAKE_DIRECTORY": FAKE_DIRECTORY,
            **({"FAKE_JWKS": FAKE_JWKS} if jwks is not None else {}),
        },
        **kwargs,
    )


def _nanoseconds(duration: str) -> int:
    return parse_go_duration(duration)


def hardened(service: str, settings: Settings) -> dict[str, Any]:
    """The lock-down components/containers.py declares for a service, as docker-py arguments."""
    health = {
        "dovecot": declared.greets(layout.IMAP_PORT, "* OK"),
        "postfix": declared.greets(layout.SMTP_PORT, "220 "),
        "roundcube": declared.Healthcheck(["CMD", "php", "-r", LOGIN_PAGE_CHECK]),
        "opendkim": declared.Healthcheck(["CMD", "/usr/local/bin/healthcheck"], start_period="10s"),
        "directory": DIRECTORY_SYNC_CHECK,
    }[service]
    memory = getattr(settings.memory_mb, service)
    return {
        "cap_drop": ["ALL"],
        "cap_add": declared.capability_names(service),
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": declared.SCRATCH[service],
        "mem_limit": f"{memory}m",
        "memswap_limit": f"{memory}m",
        "log_config": {"type": "json-file", "config": declared.LOG_OPTS},
        "healthcheck": {
            "test": health.command,
            # Checked often here: the tests wait for "healthy".
            "interval": _nanoseconds("2s"),
            "timeout": _nanoseconds(health.timeout),
            "retries": health.retries,
            "start_period": _nanoseconds(health.start_period),
        },
    }


def set_jwks(authentik: Any, jwks: Optional[dict[str, Any]]) -> None:
    """What the fake serves as JWKS from now on; None: HTTP 503 (authentik failing)."""
    if jwks is None:
        exec_in(authentik, ["rm", "-f", FAKE_JWKS])
    else:
        authentik.put_archive("/", tar_of({FAKE_JWKS: Upload(json.dumps(jwks).encode())}))


def start_dovecot(
    resources: Resources, images: dict[str, str], network: Any, variant: Variant, what: str = "dovecot",
    settings: Optional[Settings] = None, sasl: Any = None, directory: Any = None, **kwargs: Any,
) -> Any:
    """Dovecot as components/mailserver.py declares it; `sasl`: the auth socket's volume, shared with
    Postfix; `directory`: the directory sync's volume (directory: authentik), read-only."""
    sasl = sasl or resources.volume(f"{what}-sasl")
    directory_mount = {directory.name: {"bind": layout.DIRECTORY_DIR, "mode": "ro"}} if directory is not None else {}
    ports: dict[str, Any] = {f"{port}/tcp": ("127.0.0.1", None) for port in (layout.IMAP_PORT, layout.LMTP_PORT)}
    if (settings or variant.settings).tls is not None:
        ports[f"{layout.IMAPS_PORT}/tcp"] = ("127.0.0.1", None)
    return resources.container(
        what,
        images["dovecot"],
        variant.dovecot_files(settings),
        network=network,
        alias=layout.DOVECOT_HOST if what == "dovecot" else None,
        ports=ports,
        volumes={
            resources.volume(f"{what}-mail").name: {"bind": layout.MAIL_DIR, "mode": "rw"},
            sasl.name: {"bind": layout.SASL_SOCKET_DIR, "mode": "rw"},
            **directory_mount,
            **variant.tls_binds(),
        },
        **hardened("dovecot", settings or variant.settings),
        **kwargs,
    )


@contextmanager
def running_stack(
    docker_client: docker.DockerClient, images: dict[str, str], variant: Variant, pki: Pki
) -> Iterator[Stack]:
    """authentik (fake), Dovecot, Postfix and Roundcube on one test network."""
    resources = Resources(docker_client, f"stack-{variant.name}")
    try:
        network = resources.network()
        network.reload()
        # Connections from the host to published ports reach Postfix from the network's gateway.
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        sender = OutsideSender("sender.example", "t1", rsa.generate_private_key(public_exponent=65537, key_size=2048), gateway)
        records = [
            *dns_records(variant.settings, {variant.settings.dkim_selector: variant.dkim_public_pem}),
            *({"type": "TXT", "name": name, "value": value} for name, value in sender.zone_txt.items()),
        ]
        dns = resources.container(
            "dns",
            images["testnet"],
            {zone.DNSMASQ_CONF: Upload(zone.dnsmasq_conf(records).encode())},
            network=network,
            entrypoint=zone.DNS_COMMAND,
        )
        dns.reload()
        resolver = [dns.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]]
        # Every container of the stack resolves through the test zone only.
        authentik = start_fake_authentik(resources, images, network, variant, pki, dns=resolver)
        sasl = resources.volume("sasl")
        directory, sync = None, None
        if variant.settings.directory.source == "authentik":
            # The directory sync fills its volume before Postfix and Dovecot read it.
            directory = resources.volume("directory")
            sync = start_directory_sync(resources, images, network, variant, directory, dns=resolver)
            wait_until("the directory sync's first round", lambda: healthy_now(sync, DIRECTORY_SYNC_CHECK),
                       [authentik, sync])
        dovecot = start_dovecot(resources, images, network, variant, sasl=sasl, directory=directory, dns=resolver)
        opendkim = resources.container(
            "opendkim",
            images["opendkim"],
            variant.opendkim_files(),
            network=network,
            alias=layout.OPENDKIM_HOST,
            dns=resolver,
            **hardened("opendkim", variant.settings),
        )
        postfix = resources.container(
            "postfix",
            images["postfix"],
            variant.postfix_files(),
            network=network,
            alias=layout.POSTFIX_HOST,
            ports={
                f"{port}/tcp": ("127.0.0.1", None)
                for port in (layout.SMTP_PORT, layout.SUBMISSION_PORT, layout.WEBMAIL_SUBMISSION_PORT)
            },
            volumes={
                resources.volume("spool").name: {"bind": layout.POSTFIX_SPOOL_DIR, "mode": "rw"},
                sasl.name: {"bind": layout.SASL_SOCKET_DIR, "mode": "ro"},
                **({directory.name: {"bind": layout.DIRECTORY_DIR, "mode": "ro"}} if directory is not None else {}),
                **variant.tls_binds(),
            },
            **hardened("postfix", variant.settings),
            dns=resolver,
        )
        roundcube = resources.container(
            "roundcube",
            images["roundcube"],
            variant.roundcube_files(),
            network=network,
            alias=layout.ROUNDCUBE_HOST,
            ports={f"{layout.HTTP_PORT}/tcp": ("127.0.0.1", None)},
            volumes={resources.volume("roundcube-db").name: {"bind": layout.ROUNDCUBE_DB_DIR, "mode": "rw"}},
            **hardened("roundcube", variant.settings),
            dns=resolver,
        )
        stack = Stack(variant, resources, network, authentik, dovecot, postfix, roundcube, opendkim, dns, sender, sync)
        stack.ports = {
            "imap": published_port(dovecot, layout.IMAP_PORT),
            "lmtp": published_port(dovecot, layout.LMTP_PORT),
            "smtp": published_port(postfix, layout.SMTP_PORT),
            "submission": published_port(postfix, layout.SUBMISSION_PORT),
            "webmail_submission": published_port(postfix, layout.WEBMAIL_SUBMISSION_PORT),
            "http": published_port(roundcube, layout.HTTP_PORT),
        }
        if variant.settings.tls is not None:
            stack.ports["imaps"] = published_port(dovecot, layout.IMAPS_PORT)
        everything = [authentik, dovecot, postfix, roundcube, opendkim, dns]
        wait_until("the fake authentik", lambda: b"listening" in authentik.logs(), everything)
        wait_until("Dovecot's IMAP greeting", lambda: banner(stack.ports["imap"], b"* OK"), everything)
        for name in ("smtp", "submission", "webmail_submission"):
            wait_until(f"Postfix's {name} greeting", lambda: banner(stack.ports[name], b"220"), everything)
        wait_until("Roundcube's HTTP port", lambda: banner_http(stack.ports["http"]), everything)
        wait_until("OpenDKIM's milter port", lambda: healthy(opendkim), everything)
        yield stack
    finally:
        resources.close()


def start_directory_sync(resources: Resources, images: dict[str, str], network: Any, variant: Variant, volume: Any,
                         **kwargs: Any) -> Any:
    """The directory sync as components/mailserver.py declares it: the Postfix image, its own user, no capability."""
    return resources.container(
        "directory",
        images["postfix"],
        variant.directory_files(),
        network=network,
        entrypoint=layout.DIRECTORY_SYNC_ENTRYPOINT,
        command=[layout.DIRECTORY_SYNC_CONFIG],
        user=f"{layout.DIRECTORY_UID}:{layout.DIRECTORY_GID}",
        volumes={volume.name: {"bind": layout.DIRECTORY_DIR, "mode": "rw"}},
        **hardened("directory", variant.settings),
        **kwargs,
    )


def healthy_now(container: Any, check: declared.Healthcheck) -> bool:
    """A declared healthcheck command, run now (Docker's schedule would wait its interval)."""
    return container.exec_run(check.command[1:]).exit_code == 0


def healthy(container: Any) -> bool:
    """The image's own healthcheck command, run now (Docker's schedule would wait its interval)."""
    return container.exec_run(["/usr/local/bin/healthcheck"]).exit_code == 0


def banner_http(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.")

"""How every service container is declared: one private network, named
volumes that outlive the container, a read-only root, and config delivered
as uploaded files through a config carrier.

The docker provider extracts `uploads` at "/", which Docker refuses on a
read-only root even when the files land in a volume. So each service's
files are uploaded into a carrier: a container of the same image that is
created and never started, with an anonymous volume for each folder the
files are in. The daemon mounts those volumes read-only (`volumes_from`).
A changed file replaces the carrier, hence its id, hence the daemon; the
named volumes stay."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterable, Sequence
from urllib.parse import urlsplit

import pulumi
import pulumi_docker as docker

from components.pids_limit import PidsLimit
from components.render import layout


@dataclass
class Mount:
    """A named volume: data that survives every container replacement."""

    volume: str          # the component-local name, e.g. "mail"
    container_path: str
    read_only: bool = False


@dataclass
class Bind:
    """A file of the Docker host, mounted read-only (certificates renewed there)."""

    host_path: str
    container_path: str


@dataclass
class File:
    """A file uploaded into the container before it starts."""

    content: pulumi.Input[str]
    mode: str = "0644"
    group: str = "0"  # numeric: the provider would resolve names on the deploying machine
    owner: str = "0"


# Debian's fixed ids (base-passwd), valid in every image built from Debian.
WWW_DATA_UID = "33"
WWW_DATA_GID = "33"


@dataclass
class Publish:
    host_port: int
    container_port: int
    host_address: str  # the Docker host address it is published on


# The capabilities each daemon keeps; every other one is dropped. Found by
# starting each image with one fewer and exercising it (tests/daemons run
# every daemon with exactly these). Docker lets containers bind ports below
# 1024 without NET_BIND_SERVICE (ip_unprivileged_port_start = 0).
CAPABILITIES: dict[str, dict[str, str]] = {
    "dovecot": {
        "CHOWN": "the entrypoint owns a foreign mail folder; the master fchowns /run/dovecot/login",
        "DAC_OVERRIDE": "the root master reaches the vmail-owned maildirs and its runtime folders",
        "SETUID": "processes switch to vmail (mail), dovecot and dovenull (login, stats)",
        "SETGID": "the same switches set their groups (setgroups)",
        "SYS_CHROOT": "imap-login processes chroot into /run/dovecot/login",
        "KILL": "the root master signals (stops, idle-kills) children running as other users",
    },
    "postfix": {
        "CHOWN": "`postfix check` owns the queue folders it creates in a fresh spool volume",
        "DAC_OVERRIDE": "the root master and postsuper reach queue folders owned by postfix",
        "FOWNER": "`postfix check` sets modes on queue folders root does not own",
        "SETUID": "daemons switch to the postfix user",
        "SETGID": "the same switches set their groups",
        "KILL": "the root master signals its children running as postfix",
    },
    "opendkim": {
        "DAC_READ_SEARCH": "root (the entrypoint's check, then OpenDKIM before it drops privileges) reads the "
        "signing key, mode 0600 and owned by the opendkim user",
        "SETUID": "OpenDKIM drops from root to the opendkim user (UserID) after reading its config",
        "SETGID": "the same switch sets its groups",
    },
    # Runs as its own user (layout.DIRECTORY_UID) from the start: no capability.
    "directory": {},
    "roundcube": {
        "CHOWN": "the entrypoint owns the sqlite folder and a new database for www-data",
        "DAC_OVERRIDE": "the entrypoint replaces files in the www-data-owned database folder",
        "FOWNER": "the entrypoint sets modes on the www-data-owned database folder",
        "SETUID": "Apache's children and the schema update run as www-data",
        "SETGID": "the same switches set their groups",
        "KILL": "Apache's root parent signals its www-data children",
    },
}

# What each daemon writes outside its volumes: tmpfs, since the root is
# read-only. Found by running each image read-only and adding one at a time
# until it served (tests/daemons run every daemon with exactly these); the
# owners are the images' fixed ids. tmpfs pages count against the memory limit.
SCRATCH: dict[str, dict[str, str]] = {
    "dovecot": {
        "/run": "size=16m,mode=0755",              # the master's sockets, /run/dovecot
        "/tmp": "size=16m,mode=1777",              # doveconf's binary config
        "/var/lib/dovecot": "size=16m,mode=0755",  # instance registry, authentik's keys (refetched at start)
    },
    "postfix": {
        "/var/lib/postfix": f"size=16m,mode=0755,uid={layout.POSTFIX_UID},gid={layout.POSTFIX_GID}",  # master.lock, TLS session caches
    },
    "opendkim": {
        "/run/opendkim": f"size=1m,mode=0755,uid={layout.OPENDKIM_UID},gid={layout.OPENDKIM_GID}",
    },
    "directory": {
        "/tmp": "size=16m,mode=1777",              # Python's and postmap's temporary files
    },
    "roundcube": {
        "/run": "size=16m,mode=0755",        # Apache's pid file
        "/run/lock": "size=1m,mode=1777",    # Apache's lock folder (/var/lock)
        "/tmp": "size=64m,mode=1777",        # PHP's uploaded attachments
        "/var/lib/roundcube/temp": f"size=64m,mode=0750,uid={WWW_DATA_UID},gid={WWW_DATA_GID}",  # Roundcube's own temp files
    },
}


def capability_names(service: str) -> list[str]:
    """The capabilities `service` keeps, named as Docker stores them (`CAP_CHOWN`).

    The docker provider reads HostConfig.CapAdd back verbatim and compares it
    with the declaration, with no diff suppression, and capabilities force a
    replacement: a name Docker stores differently (the docker CLI and newer
    engines write the `CAP_` form) would replace the container on every `up`.
    """
    return sorted(f"CAP_{name}" for name in CAPABILITIES[service])


def config_folders(paths: Iterable[str]) -> list[str]:
    """The folders that hold `paths`, without those inside another one: the carrier's volumes."""
    folders = sorted({str(PurePosixPath(p).parent) for p in paths})
    for folder in folders:
        if folder == "/" or PurePosixPath(folder).parent == PurePosixPath("/"):
            raise ValueError(f"{folder}: an uploaded file's folder must not be / or sit directly under it")
    return [f for f in folders if not any(PurePosixPath(f).is_relative_to(o) and f != o for o in folders)]


# Container logs: json-file, rotated, at most 3 x 10 MB per container.
LOG_OPTS = {"max-size": "10m", "max-file": "3"}


@dataclass
class Healthcheck:
    """A command run inside the container with the image's own tools."""

    command: list[str]
    # Durations as Go prints them (time.Duration.String()): the provider reads
    # them back that way and would update "60s" to "1m0s" on every `up`.
    interval: str = "30s"
    timeout: str = "10s"
    retries: int = 3
    start_period: str = "1m0s"


def greets(port: int, prefix: str) -> Healthcheck:
    """Healthy when the service on `port` greets with `prefix` (bash's /dev/tcp: no extra tools)."""
    script = f'exec 3<>/dev/tcp/127.0.0.1/{port} && read -r -t 5 line <&3 && [[ "$line" == "{prefix}"* ]]'
    return Healthcheck(["CMD", "bash", "-c", script])


@dataclass
class ServiceSpec:
    service: str                      # "dovecot", also its alias on the network
    image: pulumi.Input[str]
    network_name: pulumi.Input[str]
    files: dict[str, File] = field(default_factory=dict)  # container path -> file
    publish: Sequence[Publish] = ()
    mounts: Sequence[Mount] = ()
    binds: Sequence[Bind] = ()
    hosts: dict[str, str] = field(default_factory=dict)  # extra /etc/hosts entries: name -> address
    memory_mb: int = 512
    pids_limit: int = 500
    healthcheck: Healthcheck | None = None
    # A helper that runs from another service's image: its own program and user.
    entrypoint: Sequence[str] = ()
    command: Sequence[str] = ()
    user: str | None = None  # "uid:gid", numeric


# The Docker engine's name for the host it runs on, resolved by the engine
# itself ("host-gateway") when a container is created.
HOST_GATEWAY_NAME = "host.docker.internal"


def hosts_to_reach(url: str) -> dict[str, str]:
    """The /etc/hosts entry a container needs to reach `url` (only for the Docker host itself)."""
    return {HOST_GATEWAY_NAME: "host-gateway"} if urlsplit(url).hostname == HOST_GATEWAY_NAME else {}


def declare_volume(
    parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str], protect: bool
) -> docker.Volume:
    """A volume of data (mail, queue, database)."""
    # A stable name that depends on nothing but the stack, so no setting can
    # replace it; retained even if someone unprotects and destroys the stack.
    return docker.Volume(
        resource_name,
        name=volume_name,
        opts=pulumi.ResourceOptions(parent=parent, protect=protect, retain_on_delete=True),
    )


def declare_shared_volume(parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str]) -> docker.Volume:
    """A volume two services share at run time (a socket), holding nothing to keep."""
    return docker.Volume(resource_name, name=volume_name, opts=pulumi.ResourceOptions(parent=parent))


def declare_config_carrier(
    parent: pulumi.Resource, resource_name: str, container_name: pulumi.Input[str], spec: ServiceSpec
) -> docker.Container:
    """The never-started container that holds a service's uploaded files (see the module's text)."""
    return docker.Container(
        f"{resource_name}-config",
        name=pulumi.Output.concat(container_name, "-config"),
        image=spec.image,
        start=False,
        must_run=False,
        network_mode="none",
        # Anonymous volumes, filled from the image and then by the uploads;
        # removed with the carrier (remove_volumes is the default).
        volumes=[docker.ContainerVolumeArgs(container_path=folder) for folder in config_folders(spec.files)],
        uploads=[
            docker.ContainerUploadArgs(file=path, content=f.content, permissions=f.mode, owner=f.owner, group=f.group)
            for path, f in sorted(spec.files.items())
        ],
        opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=True),
    )


def declare_container(
    parent: pulumi.Resource,
    resource_name: str,
    container_name: pulumi.Input[str],
    spec: ServiceSpec,
    volumes: dict[str, docker.Volume],
    docker_host: pulumi.Input[str],
) -> docker.Container:
    health = spec.healthcheck
    carrier = declare_config_carrier(parent, resource_name, container_name, spec) if spec.files else None
    container = docker.Container(
        resource_name,
        name=container_name,
        image=spec.image,
        hostname=spec.service,
        entrypoints=list(spec.entrypoint) or None,
        command=list(spec.command) or None,
        user=spec.user,
        restart="unless-stopped",
        # Locked down: only the capabilities the daemon needs, no privilege
        # gained through setuid binaries, a read-only root with tmpfs for
        # what the daemon writes, bounded memory (no swap beyond it), logs
        # and (below) processes.
        capabilities=docker.ContainerCapabilitiesArgs(adds=capability_names(spec.service), drops=["ALL"]),
        security_opts=["no-new-privileges:true"],
        read_only=True,
        tmpfs=SCRATCH[spec.service],
        memory=spec.memory_mb,
        memory_swap=spec.memory_mb,
        log_driver="json-file",
        log_opts=LOG_OPTS,
        healthcheck=None if health is None else docker.ContainerHealthcheckArgs(
            tests=health.command,
            interval=health.interval,
            timeout=health.timeout,
            retries=health.retries,
            start_period=health.start_period,
        ),
        networks_advanced=[
            docker.ContainerNetworksAdvancedArgs(name=spec.network_name, aliases=[spec.service]),
        ],
        ports=[
            docker.ContainerPortArgs(internal=p.container_port, external=p.host_port, ip=p.host_address)
            for p in spec.publish
        ],
        volumes=[
            docker.ContainerVolumeArgs(
                volume_name=volumes[m.volume].name, container_path=m.container_path, read_only=m.read_only or None
            )
            for m in spec.mounts
        ]
        + [
            docker.ContainerVolumeArgs(host_path=b.host_path, container_path=b.container_path, read_only=True)
            for b in spec.binds
        ]
        # The carrier's config folders, read-only. The provider passes
        # from_container to Docker's VolumesFrom as is (its read_only flag
        # applies to paths only), so the mode goes in Docker's own syntax.
        + ([docker.ContainerVolumeArgs(from_container=carrier.id.apply(lambda i: f"{i}:ro"))] if carrier else []),
        hosts=[docker.ContainerHostArgs(host=name, ip=address) for name, address in sorted(spec.hosts.items())],
        opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=True),
    )
    # The provider has no pids limit: set on the engine once the container exists.
    PidsLimit(
        f"{resource_name}-pids-limit",
        docker_host=docker_host,
        container_id=container.id,
        pids_limit=spec.pids_limit,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return container

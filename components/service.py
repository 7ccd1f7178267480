"""The description of every service, whatever runs it.

A component says what a service is (image, files, volumes, ports, limits,
healthcheck) in a ServiceSpec; a deployment target turns it into Docker
resources: components/containers.py (containers, the default) or
components/swarm.py (Swarm services). components/target.py picks one, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence
from urllib.parse import urlsplit

import pulumi

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
    # Holds a secret (a credential, a key): a Docker secret in Swarm, not a config.
    secret: bool = False
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
    # Run as their own users from the start (the image's USER, or the spec's): no capability.
    "directory": {},
    "postgres": {},
    "balancer": {},
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
    "postgres": {
        "/run/postgresql": f"size=1m,mode=0755,uid={layout.POSTGRES_UID},gid={layout.POSTGRES_UID}",  # socket, lock
    },
    "balancer": {},
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
    # Several copies behind one name (Swarm only), and where it must run:
    # "mail", the node that holds the mail volumes, or "any".
    replicas: int = 1
    placement: Literal["mail", "any"] = "mail"


# The Docker engine's name for the host it runs on, resolved by the engine
# itself ("host-gateway") when a container is created.
HOST_GATEWAY_NAME = "host.docker.internal"


def hosts_to_reach(url: str) -> dict[str, str]:
    """The /etc/hosts entry a container needs to reach `url` (only for the Docker host itself)."""
    return {HOST_GATEWAY_NAME: "host-gateway"} if urlsplit(url).hostname == HOST_GATEWAY_NAME else {}

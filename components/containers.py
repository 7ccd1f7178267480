"""How every service container is declared: one private network, named
volumes that outlive the container, config delivered as uploaded files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import urlsplit

import pulumi
import pulumi_docker as docker


@dataclass
class Mount:
    """A named volume: data that survives every container replacement."""

    volume: str          # the component-local name, e.g. "mail"
    container_path: str


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
WWW_DATA_GID = "33"


@dataclass
class Publish:
    host_port: int
    container_port: int


@dataclass
class ServiceSpec:
    service: str                      # "dovecot", also its alias on the network
    image: pulumi.Input[str]
    network_name: pulumi.Input[str]
    publish_address: str
    files: dict[str, File] = field(default_factory=dict)  # container path -> file
    publish: Sequence[Publish] = ()
    mounts: Sequence[Mount] = ()
    binds: Sequence[Bind] = ()
    hosts: dict[str, str] = field(default_factory=dict)  # extra /etc/hosts entries: name -> address
    healthcheck: Sequence[str] = ()   # a Docker healthcheck command (["CMD", ...]); none when empty


# The Docker engine's name for the host it runs on, resolved by the engine
# itself ("host-gateway") when a container is created.
HOST_GATEWAY_NAME = "host.docker.internal"


def hosts_to_reach(url: str) -> dict[str, str]:
    """The /etc/hosts entry a container needs to reach `url` (only for the Docker host itself)."""
    return {HOST_GATEWAY_NAME: "host-gateway"} if urlsplit(url).hostname == HOST_GATEWAY_NAME else {}


def declare_volume(
    parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str], protect: bool
) -> docker.Volume:
    # A stable name that depends on nothing but the stack, so no setting can
    # replace it; retained even if someone unprotects and destroys the stack.
    return docker.Volume(
        resource_name,
        name=volume_name,
        opts=pulumi.ResourceOptions(parent=parent, protect=protect, retain_on_delete=True),
    )


def declare_container(
    parent: pulumi.Resource,
    resource_name: str,
    container_name: pulumi.Input[str],
    spec: ServiceSpec,
    volumes: dict[str, docker.Volume],
) -> docker.Container:
    return docker.Container(
        resource_name,
        name=container_name,
        image=spec.image,
        hostname=spec.service,
        restart="unless-stopped",
        networks_advanced=[
            docker.ContainerNetworksAdvancedArgs(name=spec.network_name, aliases=[spec.service]),
        ],
        ports=[
            docker.ContainerPortArgs(internal=p.container_port, external=p.host_port, ip=spec.publish_address)
            for p in spec.publish
        ],
        volumes=[
            docker.ContainerVolumeArgs(volume_name=volumes[m.volume].name, container_path=m.container_path)
            for m in spec.mounts
        ]
        + [
            docker.ContainerVolumeArgs(host_path=b.host_path, container_path=b.container_path, read_only=True)
            for b in spec.binds
        ],
        hosts=[docker.ContainerHostArgs(host=name, ip=address) for name, address in sorted(spec.hosts.items())],
        # Written into the container before it starts. A changed file replaces
        # the container; the volumes above stay.
        uploads=[
            docker.ContainerUploadArgs(file=path, content=f.content, permissions=f.mode, owner=f.owner, group=f.group)
            for path, f in sorted(spec.files.items())
        ],
        healthcheck=(
            docker.ContainerHealthcheckArgs(
                tests=list(spec.healthcheck), interval="30s", timeout="5s", retries=3, start_period="10s"
            )
            if spec.healthcheck
            else None
        ),
        opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=True),
    )

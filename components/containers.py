"""The default deployment target: each service description (components/service.py)
as a Docker container on one host. One private network, named volumes that
outlive the container, a read-only root, and config delivered as uploaded
files through a config carrier.

The docker provider extracts `uploads` at "/", which Docker refuses on a
read-only root even when the files land in a volume. So each service's
files are uploaded into a carrier: a container of the same image that is
created and never started, with an anonymous volume for each folder the
files are in. The daemon mounts those volumes read-only (`volumes_from`).
A changed file replaces the carrier, hence its id, hence the daemon; the
named volumes stay."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Iterable

import pulumi
import pulumi_docker as docker

from components.pids_limit import PidsLimit
from components.service import LOG_OPTS, SCRATCH, ServiceSpec, capability_names


def config_folders(paths: Iterable[str]) -> list[str]:
    """The folders that hold `paths`, without those inside another one: the carrier's volumes."""
    folders = sorted({str(PurePosixPath(p).parent) for p in paths})
    for folder in folders:
        if folder == "/" or PurePosixPath(folder).parent == PurePosixPath("/"):
            raise ValueError(f"{folder}: an uploaded file's folder must not be / or sit directly under it")
    return [f for f in folders if not any(PurePosixPath(f).is_relative_to(o) and f != o for o in folders)]


def _volume(
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


def _shared_volume(parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str]) -> docker.Volume:
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


def _container(
    parent: pulumi.Resource,
    resource_name: str,
    container_name: pulumi.Input[str],
    spec: ServiceSpec,
    volumes: dict[str, docker.Volume],
    network_name: pulumi.Input[str],
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
            docker.ContainerNetworksAdvancedArgs(name=network_name, aliases=[spec.service]),
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


class ContainerTarget:
    """Declares volumes and containers on one Docker engine (the stack's docker_host)."""

    def __init__(self, network_name: pulumi.Input[str], docker_host: pulumi.Input[str]) -> None:
        self.network_name = network_name
        self.docker_host = docker_host

    def volume(self, parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str],
               protect: bool) -> docker.Volume:
        return _volume(parent, resource_name, volume_name, protect)

    def shared_volume(self, parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str]) -> docker.Volume:
        return _shared_volume(parent, resource_name, volume_name)

    def service(self, parent: pulumi.Resource, resource_name: str, name: pulumi.Input[str], spec: ServiceSpec,
                volumes: dict[str, docker.Volume]) -> docker.Container:
        if spec.replicas != 1:
            raise ValueError(f"{spec.service}: {spec.replicas} replicas need deployment: swarm")
        return _container(parent, resource_name, name, spec, volumes, self.network_name, self.docker_host)

"""Creates on a real Docker engine exactly the Docker resources a capture declares.

No Pulumi engine runs here, so this plays the docker provider's part: the
networks, volumes, image builds and containers (with their uploads, published
ports, mounts and aliases) come from the program's own declarations
(offline.capture). A container input this module does not know makes it
fail rather than deploy something other than what the program asked for.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import docker
from docker.models.containers import Container

from offline.capture import PROJECT_DIR, Capture, DeclaredResource

CONTAINER_INPUTS = {"name", "image", "hostname", "restart", "networksAdvanced", "ports", "volumes", "uploads", "hosts"}
UPLOAD_INPUTS = {"file", "content", "permissions", "owner", "group"}


class UnsupportedDeclaration(AssertionError):
    pass


@dataclass
class Deployment:
    client: docker.DockerClient
    containers: dict[str, Container] = field(default_factory=dict)   # by resource name
    networks: list[Any] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)             # declared repoDigest -> real image id

    def container(self, service: str) -> Container:
        found = [c for name, c in self.containers.items() if name.endswith(f"-{service}")]
        assert len(found) == 1, f"no single container for {service}: {list(self.containers)}"
        found[0].reload()
        return found[0]

    def logs(self, service: str) -> str:
        return self.container(service).logs().decode(errors="replace")

    def remove(self) -> None:
        """Stops and removes everything this deployment created (volumes too: they are the test's)."""
        for c in self.containers.values():
            try:
                c.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
        for v in self.volumes:
            try:
                v.remove(force=True)
            except docker.errors.NotFound:
                pass
        for n in self.networks:
            try:
                n.remove()
            except docker.errors.NotFound:
                pass


def build_images(client: docker.DockerClient, capture: Capture, project_dir: Path = PROJECT_DIR) -> dict[str, str]:
    images = {}
    for image in capture.of_type("docker:index/image:Image"):
        build = image.inputs["build"]
        context = project_dir / build["context"]
        dockerfile = os.path.relpath(project_dir / build["dockerfile"], context)
        built, _ = client.images.build(
            path=str(context),
            dockerfile=dockerfile,
            buildargs=build.get("args", {}),
            tag=image.inputs["imageName"],
            rm=True,
            forcerm=True,
        )
        images[image.outputs["repoDigest"]] = built.id
    return images


def _tar(uploads: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for upload in uploads:
            unknown = set(upload) - UPLOAD_INPUTS
            if unknown:
                raise UnsupportedDeclaration(f"upload {upload['file']}: unsupported inputs {sorted(unknown)}")
            data = upload["content"].encode()
            info = tarfile.TarInfo(upload["file"].lstrip("/"))
            info.size = len(data)
            info.mode = int(upload.get("permissions", "0644"), 8)
            info.uid = int(upload.get("owner", "0"))
            info.gid = int(upload.get("group", "0"))
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _create_container(deployment: Deployment, declared: DeclaredResource) -> Container:
    api = deployment.client.api
    inputs = declared.inputs
    unknown = set(inputs) - CONTAINER_INPUTS
    if unknown:
        raise UnsupportedDeclaration(f"{declared.name}: container inputs the e2e deployer does not apply: {sorted(unknown)}")
    if any(h.get("ip") == "host-gateway" for h in inputs.get("hosts", [])):
        # That would send the containers' traffic to the Docker host's own
        # bridge address; the tests talk only to loopback and their containers.
        raise UnsupportedDeclaration(f"{declared.name}: host-gateway mappings are not deployed by the tests")
    networks = inputs["networksAdvanced"]
    if len(networks) != 1:
        raise UnsupportedDeclaration(f"{declared.name}: expected one network, got {networks}")
    ports = inputs.get("ports", [])
    mounts = []
    for volume in inputs.get("volumes", []):
        if "volumeName" in volume:
            mounts.append(docker.types.Mount(volume["containerPath"], volume["volumeName"], type="volume"))
        else:
            mounts.append(
                docker.types.Mount(
                    volume["containerPath"], volume["hostPath"], type="bind", read_only=bool(volume.get("readOnly"))
                )
            )
    host_config = api.create_host_config(
        port_bindings={f"{p['internal']}/tcp": (p["ip"], p["external"]) for p in ports},
        mounts=mounts,
        restart_policy={"Name": inputs.get("restart", "no")},
        extra_hosts={h["host"]: h["ip"] for h in inputs.get("hosts", [])},
    )
    networking = api.create_networking_config(
        {networks[0]["name"]: api.create_endpoint_config(aliases=networks[0].get("aliases", []))}
    )
    created = api.create_container(
        image=deployment.images[inputs["image"]],
        name=inputs["name"],
        hostname=inputs.get("hostname"),
        ports=[p["internal"] for p in ports],
        host_config=host_config,
        networking_config=networking,
        detach=True,
    )
    container = deployment.client.containers.get(created["Id"])
    if inputs.get("uploads"):
        container.put_archive("/", _tar(inputs["uploads"]))
    return container


def deploy(
    client: docker.DockerClient, capture: Capture, images: dict[str, str], services: tuple[str, ...] = ()
) -> Deployment:
    """Creates the declared networks, volumes and containers and starts the containers.

    `services` (e.g. ("dovecot",)) deploys only those containers and the volumes they mount.
    On any failure, what was created so far is removed before the error is raised.
    """
    deployment = Deployment(client=client, images=images)
    containers = [
        c for c in sorted(capture.of_type("docker:index/container:Container"), key=lambda r: r.name)
        if not services or any(c.name.endswith(f"-{service}") for service in services)
    ]
    mounted = {v.get("volumeName") for c in containers for v in c.inputs.get("volumes", [])}
    try:
        for network in capture.of_type("docker:index/network:Network"):
            deployment.networks.append(
                client.networks.create(network.inputs["name"], driver=network.inputs.get("driver", "bridge"))
            )
        for volume in capture.of_type("docker:index/volume:Volume"):
            if volume.inputs["name"] in mounted:
                deployment.volumes.append(client.volumes.create(volume.inputs["name"]))
        for declared in containers:
            deployment.containers[declared.name] = _create_container(deployment, declared)
        for container in deployment.containers.values():
            container.start()
    except BaseException:
        deployment.remove()
        raise
    return deployment


def leftovers(client: docker.DockerClient, prefix: str) -> Iterator[str]:
    """Names of containers, networks and volumes starting with prefix (for teardown checks)."""
    for c in client.containers.list(all=True):
        if c.name.startswith(prefix):
            yield f"container {c.name}"
    for n in client.networks.list():
        if n.name.startswith(prefix):
            yield f"network {n.name}"
    for v in client.volumes.list():
        if v.name.startswith(prefix):
            yield f"volume {v.name}"

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
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import docker
from docker.models.containers import Container

from offline.capture import PROJECT_DIR, Capture, DeclaredResource
from offline.dynamic_provider import run_provider
from tests.e2e import readback

CONTAINER_INPUTS = {
    "name", "image", "hostname", "restart", "networksAdvanced", "ports", "volumes", "uploads", "hosts",
    "capabilities", "securityOpts", "memory", "memorySwap", "logDriver", "logOpts", "healthcheck",
    "readOnly", "tmpfs", "start", "mustRun", "networkMode", "entrypoints", "command", "user",
}
PIDS_LIMIT = "pulumi-python:dynamic/roundcube-authentik:PidsLimit"
# The engine the tests' client talks to (docker.from_env): the only docker_host they deploy to.
ENGINE = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
UPLOAD_INPUTS = {"file", "content", "permissions", "owner", "group"}
HEALTHCHECK_INPUTS = {"tests", "interval", "timeout", "retries", "startPeriod"}
# What the test deployment sets although the program does not, and why; the
# read-back comparison skips exactly these.
TEST_ONLY_INPUTS = {
    "dns": "the test's own DNS zone is every container's only resolver, so no lookup leaves the test network",
}


class UnsupportedDeclaration(AssertionError):
    pass


class ReadBackDifference(AssertionError):
    """What the provider would read back differs from the declaration: every `pulumi up` would change it."""


@dataclass
class Deployment:
    client: docker.DockerClient
    containers: dict[str, Container] = field(default_factory=dict)   # by resource name
    networks: list[Any] = field(default_factory=list)
    volumes: list[Any] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)             # declared repoDigest -> real image id
    declared_ids: dict[str, str] = field(default_factory=dict)       # a container's id under the mocks -> its name
    # Containers of the test's own (its DNS zone, its receiving SMTP server), not declared by the program.
    test_services: list[Container] = field(default_factory=list)
    dns: Optional[list[str]] = None  # the test zone's resolver, given to every declared container

    def container(self, service: str) -> Container:
        found = [c for name, c in self.containers.items() if name.endswith(f"-{service}")]
        assert len(found) == 1, f"no single container for {service}: {list(self.containers)}"
        found[0].reload()
        return found[0]

    def logs(self, service: str) -> str:
        return self.container(service).logs().decode(errors="replace")

    def remove(self) -> None:
        """Stops and removes everything this deployment created (volumes too: they are the test's)."""
        # Newest first: a daemon goes before the config carrier whose volumes it mounts.
        for c in [*reversed(self.containers.values()), *self.test_services]:
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


def build_images(client: docker.DockerClient, capture: Capture, project_dir: Path = PROJECT_DIR,
                 trusted_ca: Optional[Path] = None) -> dict[str, str]:
    """Builds the declared images; with trusted_ca, each gets that CA in its system store on top."""
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
        images[image.outputs["repoDigest"]] = (
            built.id if trusted_ca is None else _with_trusted_ca(client, image.inputs["imageName"], built, trusted_ca)
        )
    return images


def _with_trusted_ca(client: docker.DockerClient, product_tag: str, product: Any, ca_file: Path) -> str:
    """A layer over the product image with `ca_file` among the system's CAs, as a public CA is.

    The product image is left as it is; its user is restored after the layer.
    """
    user = product.attrs["Config"].get("User") or ""
    dockerfile = "\n".join(
        [
            f"FROM {product_tag}",
            "USER root",
            "COPY test-ca.crt /usr/local/share/ca-certificates/roundcube-authentik-test-ca.crt",
            # Images without a CA store (OpenDKIM's) make no TLS calls to authentik.
            "RUN if command -v update-ca-certificates >/dev/null; then update-ca-certificates; fi",
            *([f"USER {user}"] if user else []),
            "",
        ]
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile.encode()), ("test-ca.crt", ca_file.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    built, _ = client.images.build(
        fileobj=context, custom_context=True, tag=f"{product_tag}-trusting-test-ca", rm=True, forcerm=True
    )
    return built.id


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


def _nanoseconds(duration: str) -> int:
    try:
        return readback.parse_go_duration(duration)
    except ValueError as err:
        raise UnsupportedDeclaration(f"healthcheck duration: {err}") from None


def _healthcheck(declared: dict[str, Any] | None) -> dict[str, Any] | None:
    if declared is None:
        return None
    unknown = set(declared) - HEALTHCHECK_INPUTS
    if unknown:
        raise UnsupportedDeclaration(f"healthcheck inputs the e2e deployer does not apply: {sorted(unknown)}")
    return {
        "test": declared["tests"],
        "interval": _nanoseconds(declared.get("interval", "0s")),
        "timeout": _nanoseconds(declared.get("timeout", "0s")),
        "retries": declared.get("retries", 0),
        "start_period": _nanoseconds(declared.get("startPeriod", "0s")),
    }


def _create_container(deployment: Deployment, declared: DeclaredResource, dns: Optional[list[str]] = None) -> Container:
    api = deployment.client.api
    inputs = declared.inputs
    unknown = set(inputs) - CONTAINER_INPUTS
    if unknown:
        raise UnsupportedDeclaration(f"{declared.name}: container inputs the e2e deployer does not apply: {sorted(unknown)}")
    if any(h.get("ip") == "host-gateway" for h in inputs.get("hosts", [])):
        # That would send the containers' traffic to the Docker host's own
        # bridge address; the tests talk only to loopback and their containers.
        raise UnsupportedDeclaration(f"{declared.name}: host-gateway mappings are not deployed by the tests")
    networks = inputs.get("networksAdvanced", [])
    network_mode = inputs.get("networkMode")
    if not (len(networks) == 1 and network_mode is None or not networks and network_mode == "none"):
        raise UnsupportedDeclaration(f"{declared.name}: expected one network or none, got {networks}, {network_mode}")
    if inputs.get("start") is False and inputs.get("mustRun") is not False:
        raise UnsupportedDeclaration(f"{declared.name}: a container that is not started must not have to run")
    ports = inputs.get("ports", [])
    # As the provider's create does (volumeSetToDockerVolumes): a named volume or
    # host path becomes a bind "<source>:<path>:rw|ro", an anonymous volume a
    # Config.Volumes entry, from_container a VolumesFrom entry, verbatim.
    binds, anonymous, volumes_from = [], [], []
    for volume in inputs.get("volumes", []):
        if "fromContainer" in volume:
            # The declared container's id (which the mocks name), then a mode.
            declared_id, _, mode = volume["fromContainer"].partition(":")
            source = deployment.containers[deployment.declared_ids[declared_id]]
            volumes_from.append(f"{source.id}:{mode}" if mode else source.id)
        elif "volumeName" in volume or "hostPath" in volume:
            source = volume.get("hostPath") or volume["volumeName"]
            binds.append(f"{source}:{volume['containerPath']}:{'ro' if volume.get('readOnly') else 'rw'}")
            anonymous.append(volume["containerPath"])
        else:
            # Anonymous: Docker makes a new volume, filled from the image, removed with the container.
            anonymous.append(volume["containerPath"])
    host_config = api.create_host_config(
        port_bindings={f"{p['internal']}/tcp": (p.get("ip", "0.0.0.0"), p["external"]) for p in ports},
        binds=binds or None,
        volumes_from=volumes_from or None,
        read_only=inputs.get("readOnly"),
        tmpfs=inputs.get("tmpfs"),
        # The provider always sends network_mode (default "bridge"), then moves
        # the container from the default bridge to networks_advanced.
        network_mode=network_mode or "bridge",
        restart_policy={"Name": inputs.get("restart", "no")},
        extra_hosts={h["host"]: h["ip"] for h in inputs.get("hosts", [])},
        cap_add=inputs.get("capabilities", {}).get("adds"),
        cap_drop=inputs.get("capabilities", {}).get("drops"),
        security_opt=inputs.get("securityOpts"),
        # The provider's memory inputs are MiB.
        mem_limit=f"{inputs['memory']}m" if "memory" in inputs else None,
        memswap_limit=f"{inputs['memorySwap']}m" if "memorySwap" in inputs else None,
        log_config={"type": inputs["logDriver"], "config": inputs.get("logOpts", {})} if "logDriver" in inputs else None,
        init=False,
        # Test only (TEST_ONLY_INPUTS): the resolver the test's own DNS zone gives every container.
        dns=dns,
    )
    created = api.create_container(
        image=deployment.images[inputs["image"]],
        name=inputs["name"],
        hostname=inputs.get("hostname"),
        entrypoint=inputs.get("entrypoints"),
        command=inputs.get("command"),
        user=inputs.get("user"),
        ports=[p["internal"] for p in ports],
        volumes=anonymous or None,
        host_config=host_config,
        healthcheck=_healthcheck(inputs.get("healthcheck")),
        detach=True,
    )
    if networks:
        api.disconnect_container_from_network(created["Id"], "bridge")
        for network in networks:
            api.connect_container_to_network(created["Id"], network["name"], aliases=network.get("aliases") or None)
    container = deployment.client.containers.get(created["Id"])
    if inputs.get("uploads"):
        container.put_archive("/", _tar(inputs["uploads"]))
    return container


def deploy(
    client: docker.DockerClient,
    capture: Capture,
    images: dict[str, str],
    test_services: Optional[Callable[[Deployment], list[str]]] = None,
    services: tuple[str, ...] = (),
) -> Deployment:
    """Creates the declared networks, volumes and containers and starts the containers.

    test_services, when given, starts the test's own containers on the new
    network (adding them to deployment.test_services) and returns the
    resolver addresses every declared container then uses (Docker's `dns`):
    the test's DNS zone instead of the Docker host's resolvers.

    `services` (e.g. ("dovecot",)) deploys only those containers and the volumes they mount.
    On any failure, what was created so far is removed before the error is raised.
    """
    deployment = Deployment(client=client, images=images)
    containers = [
        c for c in _creation_order(capture)
        if not services or any(c.name.endswith(f"-{service}") or c.name.endswith(f"-{service}-config")
                               for service in services)
    ]
    deployment.declared_ids = _declared_ids(capture)
    mounted = {v.get("volumeName") for c in containers for v in c.inputs.get("volumes", [])}
    try:
        for network in capture.of_type("docker:index/network:Network"):
            deployment.networks.append(
                client.networks.create(network.inputs["name"], driver=network.inputs.get("driver", "bridge"))
            )
        for volume in capture.of_type("docker:index/volume:Volume"):
            if volume.inputs["name"] in mounted:
                deployment.volumes.append(client.volumes.create(volume.inputs["name"]))
        dns = deployment.dns = test_services(deployment) if test_services is not None else None
        for declared in containers:
            deployment.containers[declared.name] = _create_container(deployment, declared, dns)
        for declared in containers:
            if declared.inputs.get("start") is not False:
                deployment.containers[declared.name].start()
        _apply_pids_limits(deployment, capture, set(deployment.containers))
        # The provider's Create ends with Read: what it stores must be what the program declares.
        problems = read_back(deployment, capture, set(deployment.containers))
        if problems:
            raise ReadBackDifference("a second `pulumi up` would change:\n  " + "\n  ".join(problems))
    except BaseException:
        deployment.remove()
        raise
    return deployment


def read_back(deployment: Deployment, capture: Capture, containers: set[str]) -> list[str]:
    """Every difference between the declarations and what the provider would read back (tests/e2e/readback.py)."""
    problems = []
    for declared in capture.of_type("docker:index/container:Container"):
        if declared.name not in containers:
            continue
        deployed = deployment.containers[declared.name]
        deployed.reload()
        inputs = {**declared.inputs, "image": deployment.images[declared.inputs["image"]]}
        problems += [f"container {declared.name}: {d}" for d in
                     readback.container_differences(inputs, deployed.attrs, ignore=TEST_ONLY_INPUTS)]
    for declared in capture.of_type("docker:index/network:Network"):
        network = deployment.client.networks.get(declared.inputs["name"])
        problems += [f"network {declared.name}: {d}" for d in readback.network_differences(declared.inputs, network.attrs)]
    for declared in capture.of_type("docker:index/volume:Volume"):
        found = [v for v in deployment.volumes if v.name == declared.inputs["name"]]
        for volume in found:
            volume.reload()
            problems += [f"volume {declared.name}: {d}" for d in readback.volume_differences(declared.inputs, volume.attrs)]
    return problems


def redeploy(deployment: Deployment, earlier: Capture, later: Capture, images: dict[str, str]) -> list[str]:
    """Applies an update as the docker provider would: replaces each container whose inputs changed.

    Networks and volumes must be declared identically (the program promises
    that no setting replaces them); containers are deleted before their
    replacement is created, as `delete_before_replace` asks. Returns the
    names of the replaced containers.
    """
    for kind in ("docker:index/network:Network", "docker:index/volume:Volume"):
        before = {r.name: r.inputs for r in earlier.of_type(kind)}
        after = {r.name: r.inputs for r in later.of_type(kind)}
        if before != after:
            raise UnsupportedDeclaration(f"the update changes {kind} resources: {before} -> {after}")
    deployment.images.update(images)
    deployment.declared_ids = _declared_ids(later)
    old = {r.name: r for r in earlier.of_type("docker:index/container:Container")}
    ordered = _creation_order(later)
    changed = {d.name for d in ordered if d.name not in old or old[d.name].inputs != d.inputs}
    # A replaced container gets a new id, so a container that mounts its
    # volumes (`fromContainer`) is replaced too; Pulumi deletes such a
    # dependent before what it depends on, and creates it after.
    for declared in ordered:
        if any(_mounted_from(later, v) in changed for v in declared.inputs.get("volumes", [])):
            changed.add(declared.name)
    replacing = [d for d in ordered if d.name in changed]
    for declared in reversed(replacing):
        assert declared.delete_before_replace, f"{declared.name}: expected delete_before_replace"
        if declared.name in deployment.containers:
            deployment.containers.pop(declared.name).remove(force=True, v=True)
    for declared in replacing:
        container = _create_container(deployment, declared, deployment.dns)
        deployment.containers[declared.name] = container
        if declared.inputs.get("start") is not False:
            container.start()
    # A limit is set again for a new container (a new id) or a changed limit.
    earlier_limits = {r.name: r.inputs for r in earlier.of_type(PIDS_LIMIT)}
    again = {
        deployment.declared_ids[r.inputs["container_id"]] for r in later.of_type(PIDS_LIMIT)
        if earlier_limits.get(r.name, {}).get("pids_limit") != r.inputs["pids_limit"]
    }
    _apply_pids_limits(deployment, later, {d.name for d in replacing} | again)
    problems = read_back(deployment, later, {d.name for d in replacing})
    if problems:
        raise ReadBackDifference("a second `pulumi up` would change:\n  " + "\n  ".join(problems))
    return [d.name for d in replacing]


def _apply_pids_limits(deployment: Deployment, capture: Capture, containers: set[str]) -> None:
    """Runs each declared process limit's own provider for these containers, as `pulumi up` would."""
    for declared in capture.of_type(PIDS_LIMIT):
        target = deployment.declared_ids[declared.inputs["container_id"]]
        if target not in containers:
            continue
        if declared.inputs["docker_host"] != ENGINE:
            raise UnsupportedDeclaration(f"{declared.name}: docker_host {declared.inputs['docker_host']!r} is not {ENGINE}")
        news = {
            "docker_host": declared.inputs["docker_host"],
            "container_id": deployment.containers[target].id,
            "pids_limit": declared.inputs["pids_limit"],
        }
        run_provider(declared.inputs, news)


def _declared_ids(capture: Capture) -> dict[str, str]:
    return {r.outputs.get("id", f"{r.name}-id"): r.name for r in capture.of_type("docker:index/container:Container")}


def _mounted_from(capture: Capture, volume: dict[str, Any]) -> Optional[str]:
    """The name of the declared container a `fromContainer` volume refers to."""
    if "fromContainer" not in volume:
        return None
    return _declared_ids(capture)[volume["fromContainer"].partition(":")[0]]


def _creation_order(capture: Capture) -> list[DeclaredResource]:
    """The declared containers, each after those whose volumes it mounts."""
    declared = sorted(capture.of_type("docker:index/container:Container"), key=lambda r: r.name)
    sources = {_mounted_from(capture, v) for d in declared for v in d.inputs.get("volumes", [])} - {None}
    if any(_mounted_from(capture, v) for d in declared if d.name in sources for v in d.inputs.get("volumes", [])):
        raise UnsupportedDeclaration("a container whose volumes are mounted mounts another's")
    return [d for d in declared if d.name in sources] + [d for d in declared if d.name not in sources]


def leftovers(client: docker.DockerClient, prefix: str) -> Iterator[str]:
    """Names of containers, networks and volumes of the stack whose names start `<prefix>-`."""
    start = prefix + "-"
    # Other checkouts' containers may come and go while this lists.
    for c in client.containers.list(all=True, ignore_removed=True):
        if c.name.startswith(start):
            yield f"container {c.name}"
    for n in client.networks.list():
        if n.name.startswith(start):
            yield f"network {n.name}"
    for v in client.volumes.list():
        if v.name.startswith(start):
            yield f"volume {v.name}"

"""The second deployment target: each service description (components/service.py)
as a Docker Swarm service.

What differs from containers (components/containers.py), and why:

- Files travel as Docker configs, or secrets when they hold one (File.secret),
  mounted read-only where the daemon reads them: no config carrier. Their
  Docker name ends with a digest of the content, so a changed file is a new
  config (configs cannot change), and the service that mounts it rolls.
  Docker refuses secret and config names over 64 characters: the readable
  part is shortened to fit, the digest (of the service, path and content)
  keeps each name apart.
- The services meet on an overlay network, by name, with endpoint mode
  `dnsrr` (no virtual IP: this needs no IPVS in the kernel) and ports
  published in host mode (no ingress routing mesh, for the same reason):
  a port is bound on the node that runs the task, on every address.
- The mail services (their volumes: mail, queue, directory, Dovecot's auth
  socket) are placed on the node labelled `<mail_node_label>=true`, with
  PostgreSQL; Roundcube's replicas and the balancer go anywhere.
- Durations are written as the provider reads service durations back
  (`1m`, not the containers' `1m0s`), capabilities with the `CAP_` prefix,
  networks by id, and all four restart-policy fields: what is declared is
  what a second `pulumi up` reads back.
- No `no-new-privileges` switch exists for services in pulumi-docker 5.2.0:
  every image's entrypoint runs its daemon under `setpriv --no-new-privs`,
  in both targets.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import pulumi
import pulumi_docker as docker

from components import service as described
from components.service import ServiceSpec

# Update and rollback: a new Roundcube replica starts before an old one stops
# (no gap); a mail daemon stops first (two Dovecots on one maildir, or two
# Postfixes on one queue, must never run at once). A task that fails its
# healthcheck within `monitor` rolls the service back.
_MONITOR = "1m"


def swarm_duration(go_text: str) -> str:
    """A Go duration as the provider reads service durations back (shortDur): 1m0s -> 1m, 1h0m0s -> 1h."""
    text = go_text
    if text.endswith("m0s"):
        text = text[:-2]
    if text.endswith("h0m"):
        text = text[:-2]
    return text


# The mode tmpfs gives its root when no mode is asked for: world-writable with the sticky bit.
TMPFS_DEFAULT_MODE = 0o1777


def tmpfs_mode(options: str) -> int:
    """The mode a service's tmpfs mount declares for Docker's tmpfs option text; 0: none (tmpfs's own 1777).

    What the real swarm showed (Docker 20.10, runc 1.1):
    - the provider reads a tmpfs mode back as `Mode.Perm()`: a declared 0o1777
      reads back 0o777, a difference on every `up`; so only permission bits
      are declared, and 1777 is asked for by declaring none;
    - a service tmpfs has no owner option: it belongs to root. Where the
      containers give it to a daemon's user (uid=), the swarm's is left at
      tmpfs's 1777, and the image or its entrypoint makes it the daemon's
      (runc 1.1 also sets a tmpfs over an existing folder to that folder's
      mode, whatever was asked: the images' folders carry the right mode).
    """
    values = dict(part.split("=", 1) for part in options.split(","))
    mode = int(values.get("mode", "1777"), 8)
    if "uid" in values or mode == TMPFS_DEFAULT_MODE:
        return 0
    if mode & ~0o777:
        raise ValueError(f"a service tmpfs can only declare permission bits, not {values['mode']}")
    return mode


def _tmpfs(options: str) -> docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs:
    """Docker's tmpfs option text (size=16m,mode=0755,uid=..) as a service mount's options (see tmpfs_mode)."""
    values = dict(part.split("=", 1) for part in options.split(","))
    size = values["size"]
    factor = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[size[-1].lower()]
    return docker.ServiceTaskSpecContainerSpecMountTmpfsOptionsArgs(
        size_bytes=int(size[:-1]) * factor, mode=tmpfs_mode(options) or None)


def _named_for(path: str, parts: list[str]) -> str:
    return file_object_name(parts[0], path, parts[1])


def _slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


# Docker's limit for secret and config names (swarmkit: 64 of [a-zA-Z0-9-_.], alphanumeric at both ends).
DOCKER_NAME_LIMIT = 64
DIGEST_LENGTH = 12


def file_object_name(service_name: str, path: str, content: str) -> str:
    """The Docker name of a file's config or secret: `<service>-<file>-<digest>`, at most 64 characters.

    The digest covers the service, the path and the content: a changed file
    gets a new name (the service rolls), and names stay apart however much
    of the readable part a long stack name leaves.
    """
    digest = hashlib.sha256(f"{service_name}\n{path}\n{content}".encode()).hexdigest()[:DIGEST_LENGTH]
    readable = f"{service_name}-{_slug(path.rsplit('/', 1)[-1])}"[: DOCKER_NAME_LIMIT - DIGEST_LENGTH - 1]
    return f"{readable.rstrip('-_.')}-{digest}"


class SwarmTarget:
    """Declares volumes and services on a Docker Swarm (the stack's docker_host is a manager)."""

    def __init__(self, network_id: pulumi.Input[str], mail_node_label: str, docker_host: pulumi.Input[str]) -> None:
        self.network_id = network_id
        self.mail_node_label = mail_node_label
        self.docker_host = docker_host

    def volume(self, parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str],
               protect: bool) -> docker.Volume:
        # Declared through the manager: the mail node should be the manager the
        # stack deploys to, or Docker creates the volume on the mail node itself
        # at the first task (then unprotected by Pulumi). See the README.
        return docker.Volume(resource_name, name=volume_name,
                             opts=pulumi.ResourceOptions(parent=parent, protect=protect, retain_on_delete=True))

    def shared_volume(self, parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str]) -> docker.Volume:
        return docker.Volume(resource_name, name=volume_name, opts=pulumi.ResourceOptions(parent=parent))

    def _files(self, parent: pulumi.Resource, resource_name: str, name: pulumi.Input[str], spec: ServiceSpec,
               ) -> tuple[list[docker.ServiceTaskSpecContainerSpecConfigArgs], list[docker.ServiceTaskSpecContainerSpecSecretArgs]]:
        configs, secrets = [], []
        for path, file in sorted(spec.files.items()):
            content: pulumi.Output[str] = pulumi.Output.from_input(file.content)
            data: pulumi.Output[str] = content.apply(lambda text: base64.b64encode(text.encode()).decode())
            # A digest of a random secret says nothing about it; the name stays readable.
            docker_name: pulumi.Output[str] = pulumi.Output.unsecret(
                pulumi.Output.all(name, content).apply(functools.partial(_named_for, path)))
            child = pulumi.ResourceOptions(parent=parent)
            if file.secret:
                hidden: pulumi.Output[str] = pulumi.Output.secret(data)
                held = docker.Secret(f"{resource_name}-{_slug(path)}", name=docker_name, data=hidden, opts=child)
                secrets.append(docker.ServiceTaskSpecContainerSpecSecretArgs(
                    secret_id=held.id, secret_name=held.name, file_name=path,
                    file_uid=file.owner, file_gid=file.group, file_mode=int(file.mode, 8)))
            else:
                config = docker.ServiceConfig(f"{resource_name}-{_slug(path)}", name=docker_name, data=data, opts=child)
                configs.append(docker.ServiceTaskSpecContainerSpecConfigArgs(
                    config_id=config.id, config_name=config.name, file_name=path,
                    file_uid=file.owner, file_gid=file.group, file_mode=int(file.mode, 8)))
        return configs, secrets

    def service(self, parent: pulumi.Resource, resource_name: str, name: pulumi.Input[str], spec: ServiceSpec,
                volumes: dict[str, docker.Volume]) -> docker.Service:
        configs, secrets = self._files(parent, resource_name, name, spec)
        health = spec.healthcheck
        mounts: list[docker.ServiceTaskSpecContainerSpecMountArgs] = [
            docker.ServiceTaskSpecContainerSpecMountArgs(
                target=m.container_path, source=volumes[m.volume].name, type="volume", read_only=m.read_only or None)
            for m in spec.mounts
        ]
        mounts += [
            docker.ServiceTaskSpecContainerSpecMountArgs(target=b.container_path, source=b.host_path, type="bind",
                                                         read_only=True)
            for b in spec.binds
        ]
        mounts += [
            docker.ServiceTaskSpecContainerSpecMountArgs(target=path, type="tmpfs", tmpfs_options=_tmpfs(options))
            for path, options in sorted(described.SCRATCH[spec.service].items())
        ]
        on_mail_node = spec.placement == "mail"
        order = "start-first" if spec.replicas > 1 else "stop-first"
        return docker.Service(
            resource_name,
            name=name,
            mode=docker.ServiceModeArgs(replicated=docker.ServiceModeReplicatedArgs(replicas=spec.replicas)),
            task_spec=docker.ServiceTaskSpecArgs(
                container_spec=docker.ServiceTaskSpecContainerSpecArgs(
                    image=spec.image,
                    hostname=spec.service,
                    commands=list(spec.entrypoint) or None,
                    args=list(spec.command) or None,
                    user=spec.user,
                    read_only=True,
                    cap_adds=described.capability_names(spec.service),
                    cap_drops=["ALL"],
                    mounts=mounts,
                    configs=configs or None,
                    secrets=secrets or None,
                    hosts=[docker.ServiceTaskSpecContainerSpecHostArgs(host=h, ip=ip) for h, ip in sorted(spec.hosts.items())]
                    or None,
                    healthcheck=None if health is None else docker.ServiceTaskSpecContainerSpecHealthcheckArgs(
                        tests=health.command, interval=swarm_duration(health.interval),
                        timeout=swarm_duration(health.timeout), start_period=swarm_duration(health.start_period),
                        retries=health.retries),
                    stop_grace_period="10s",
                ),
                resources=docker.ServiceTaskSpecResourcesArgs(
                    limits=docker.ServiceTaskSpecResourcesLimitsArgs(memory_bytes=spec.memory_mb << 20)),
                restart_policy=docker.ServiceTaskSpecRestartPolicyArgs(condition="any", delay="5s", max_attempts=0,
                                                                       window="0s"),
                log_driver=docker.ServiceTaskSpecLogDriverArgs(name="json-file", options=described.LOG_OPTS),
                networks_advanceds=[docker.ServiceTaskSpecNetworksAdvancedArgs(id=self.network_id,
                                                                                aliases=[spec.service])],
                placement=docker.ServiceTaskSpecPlacementArgs(
                    constraints=[f"node.labels.{self.mail_node_label}==true"]) if on_mail_node else None,
            ),
            endpoint_spec=docker.ServiceEndpointSpecArgs(
                mode="dnsrr",
                ports=[docker.ServiceEndpointSpecPortArgs(target_port=p.container_port, published_port=p.host_port,
                                                          publish_mode="host", protocol="tcp")
                       for p in spec.publish] or None,
            ),
            update_config=docker.ServiceUpdateConfigArgs(
                parallelism=1, delay="5s", failure_action="rollback", monitor=_MONITOR, max_failure_ratio="0.0",
                order=order),
            rollback_config=docker.ServiceRollbackConfigArgs(
                parallelism=1, delay="5s", failure_action="pause", monitor=_MONITOR, max_failure_ratio="0.0",
                order=order),
            opts=pulumi.ResourceOptions(parent=parent),
        )


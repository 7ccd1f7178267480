"""The one place that picks where the services run (settings.deployment).

Components describe services (components/service.py) and hand them to the
target; they never ask which one it is.
"""

from __future__ import annotations

import re
from typing import Protocol

import pulumi
import pulumi_docker as docker

from components.containers import ContainerTarget
from components.service import SCRATCH, ServiceSpec
from components.settings import Settings, SettingsError
from components.swarm import SwarmTarget


class DeploymentTarget(Protocol):
    def volume(self, parent: pulumi.Resource, resource_name: str, volume_name: pulumi.Input[str],
               protect: bool) -> docker.Volume: ...

    def shared_volume(self, parent: pulumi.Resource, resource_name: str,
                      volume_name: pulumi.Input[str]) -> docker.Volume: ...

    def service(self, parent: pulumi.Resource, resource_name: str, name: pulumi.Input[str], spec: ServiceSpec,
                volumes: dict[str, docker.Volume]) -> pulumi.CustomResource: ...


def network_driver(settings: Settings) -> str:
    """The private network: a bridge on one host, an overlay across a swarm's nodes."""
    return "overlay" if settings.deployment == "swarm" else "bridge"


def deployment_target(settings: Settings, network_name: pulumi.Input[str], network_id: pulumi.Input[str]) -> DeploymentTarget:
    if settings.deployment == "swarm":
        return SwarmTarget(network_id, settings.swarm.mail_node_label, settings.docker_host)
    return ContainerTarget(network_name, settings.docker_host)


# swarmkit names services as DNS labels (controlapi's validation).
_SERVICE_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
_SERVICE_NAME_LIMIT = 63


def check_service_names(settings: Settings, stack: str, prefix: str) -> None:
    """Refuses, before any resource, a stack whose swarm service names Docker would reject
    halfway through `pulumi up`. Containers have no such rule."""
    if settings.deployment != "swarm":
        return
    longest = max(SCRATCH, key=len)  # SCRATCH has an entry for every service, in either target
    allowed = _SERVICE_NAME_LIMIT - len(f"{prefix}-{longest}") + len(stack)
    if len(stack) > allowed or not _SERVICE_NAME.match(f"{prefix}-{longest}"):
        raise SettingsError(
            f"stack name {stack!r} does not fit deployment: swarm: Docker names each service "
            f"{prefix}-<service> as a DNS label of letters, digits, '-' and '_' (at most "
            f"{_SERVICE_NAME_LIMIT} characters, '{prefix}-{longest}' the longest), so the stack name "
            f"may have at most {allowed} characters and no '.'"
        )

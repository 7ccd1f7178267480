"""The one place that picks where the services run (settings.deployment).

Components describe services (components/service.py) and hand them to the
target; they never ask which one it is.
"""

from __future__ import annotations

from typing import Protocol

import pulumi
import pulumi_docker as docker

from components.containers import ContainerTarget
from components.service import ServiceSpec
from components.settings import Settings
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

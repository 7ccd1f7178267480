"""The Docker host: the provider that talks to its engine and the private network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker


@dataclass
class DockerHostArgs:
    docker_host: pulumi.Input[str]
    network_name: pulumi.Input[str]
    network_driver: str = "bridge"  # "overlay" across a swarm's nodes (components/target.py)


class DockerHost(pulumi.ComponentResource):
    """One Docker engine (local socket or ssh://) and the network only our containers share."""

    provider: docker.Provider
    network_name: pulumi.Output[str]
    network_id: pulumi.Output[str]

    def __init__(self, name: str, args: DockerHostArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:DockerHost", name, None, opts)
        self.provider = docker.Provider(f"{name}-engine", host=args.docker_host, opts=pulumi.ResourceOptions(parent=self))
        network = docker.Network(
            f"{name}-private",
            name=args.network_name,
            driver=args.network_driver,
            # Not `internal`: Dovecot must reach authentik and Postfix the world.
            # Containers publish only the ports the settings list.
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )
        self.network_name = network.name
        self.network_id = network.id
        self.register_outputs({"network_name": self.network_name})

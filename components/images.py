"""The service images, built on the Docker host from images/<service>/Dockerfile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_docker as docker

SERVICES = ("dovecot", "postfix", "roundcube", "opendkim")
# Only with several Roundcube replicas: their shared database and their balancer.
REPLICA_SERVICES = ("postgres", "balancer")


@dataclass
class ServiceImagesArgs:
    base_image: pulumi.Input[str]
    tag: pulumi.Input[str]
    # A new stamp rebuilds every image from current packages (security updates).
    rebuild_stamp: Optional[str] = None
    services: Sequence[str] = SERVICES


class ServiceImages(pulumi.ComponentResource):
    """Builds without pushing: the engine that runs the containers keeps the images."""

    ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ServiceImagesArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:ServiceImages", name, None, opts)
        self.ids = {}
        build_args: dict[str, pulumi.Input[str]] = {"BASE_IMAGE": args.base_image}
        if args.rebuild_stamp is not None:
            # A changed build argument changes the image's inputs: Pulumi
            # rebuilds it, and the Dockerfiles' `ARG IMAGE_REBUILD` makes
            # Docker's cache miss for every package step.
            build_args["IMAGE_REBUILD"] = args.rebuild_stamp
        for service in args.services:
            image = docker.Image(
                f"{name}-{service}",
                image_name=pulumi.Output.concat("roundcube-authentik/", service, ":", args.tag),
                build=docker.DockerBuildArgs(
                    # Relative to the project folder, where pulumi runs the program.
                    context=f"images/{service}",
                    dockerfile=f"images/{service}/Dockerfile",
                    # A registry mirror or a locally imported base works the same.
                    args=build_args,
                ),
                skip_push=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            # Without a push, repo_digest is the local image id: a rebuilt image
            # changes it, so its container is recreated on the new one.
            self.ids[service] = image.repo_digest
        self.register_outputs({f"{service}_image": image_id for service, image_id in self.ids.items()})

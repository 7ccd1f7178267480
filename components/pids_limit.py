"""A per-container process limit: Docker's PidsLimit, set once the container exists.

pulumi-docker 5.2.0 (the kreuzwerker provider) cannot set a pids limit, and
an nproc ulimit bounds nothing for these root-forking daemons (README, "How
the containers are locked down"). So a dynamic resource makes the call
`docker update --pids-limit` makes, on the engine the docker provider uses.
It runs when the container is created or replaced (a new id) and when the
limit changes; Docker keeps the limit across restarts.

Pulumi serializes the provider class by value (dill) into the state and
runs it in its own process, which imports nothing of this project: so the
class refers to nothing outside itself but `docker` and `pulumi`.
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
import pulumi.dynamic


def _provider() -> pulumi.dynamic.ResourceProvider:
    """The provider, defined in here so that dill serializes it by value.

    dill pickles a class it can find again by module and name (one at this
    module's top level) by reference, and Pulumi's provider host could load it
    only if it could import this project. A class local to this function
    travels whole: its methods and what they refer to (`pulumi`, and `docker`,
    imported in the method).
    """

    class PidsLimitProvider(pulumi.dynamic.ResourceProvider):
        """Sets HostConfig.PidsLimit of one container through the Docker API's container update."""

        KEYS = ("docker_host", "container_id", "pids_limit")

        @staticmethod
        def apply(props: dict[str, Any]) -> None:
            import docker  # type: ignore[import-untyped]  # in the provider's own process (docker-py has no types)

            host = props["docker_host"]
            # Over ssh://, like the docker provider: the ssh client and `docker system dial-stdio` on the host.
            client = docker.APIClient(base_url=host, use_ssh_client=host.startswith("ssh://"))
            try:
                # docker-py's update_container has no pids_limit: the same endpoint, with it.
                url = client._url("/containers/{0}/update", props["container_id"])
                client._raise_for_status(client._post_json(url, data={"PidsLimit": int(props["pids_limit"])}))
            finally:
                client.close()

        def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
            PidsLimitProvider.apply(props)
            return pulumi.dynamic.CreateResult(id_=props["container_id"], outs=props)

        def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
            changed = [key for key in PidsLimitProvider.KEYS if olds.get(key) != news.get(key)]
            return pulumi.dynamic.DiffResult(
                changes=bool(changed),
                # A new container: a new resource, whose id is that container's.
                replaces=["container_id"] if "container_id" in changed else [],
                delete_before_replace=False,
            )

        def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
            PidsLimitProvider.apply(news)
            return pulumi.dynamic.UpdateResult(outs=news)

        # delete: nothing to undo; the container goes with its own resource.

    return PidsLimitProvider()


class PidsLimit(pulumi.dynamic.Resource, module="roundcube-authentik", name="PidsLimit"):
    """The most processes (threads included) the container may run at once."""

    def __init__(
        self,
        name: str,
        docker_host: pulumi.Input[str],
        container_id: pulumi.Input[str],
        pids_limit: pulumi.Input[int],
        opts: Optional[pulumi.ResourceOptions] = None,
    ) -> None:
        super().__init__(
            _provider(),
            name,
            {"docker_host": docker_host, "container_id": container_id, "pids_limit": pids_limit},
            opts,
        )

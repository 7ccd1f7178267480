"""The swarm example stack, deployed on a one-node swarm, with the authentik stand-in.

What runs is what users of `deployment: swarm` run: the program's
declarations for `stacks/Pulumi.swarm.yaml`, read as the Pulumi CLI reads it,
changed only by the overrides in `swarm_overrides`, each with the reason the
test machine needs it. They are created on the real engine by
tests/e2e/swarm_deploy.py (which plays the docker provider), next to the
test's own containers on the stack's overlay network: the authentik stand-in
(configured from the program's declared authentik resources, under
authentik's name), the test's DNS zone and its receiving SMTP server.

The engine must be in Swarm mode; a fresh engine is made a one-node swarm
(manager on loopback) for the test and leaves it afterwards. The node gets
the stack's mail node label, as an operator labels the node that holds the
mail volumes, and loses it afterwards unless it had it before.

Ports: a swarm publishes host-mode ports on every address of the node
(Docker has no per-address binding for services). The tests still talk only
to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from pathlib import Path
from typing import Any, Iterator, Mapping

import docker
import requests

from offline.capture import Capture, capture, read_stack
from offline.stack_file import StackConfig
from tests.e2e.deploy import ENGINE, UnsupportedDeclaration, build_images, leftovers
from tests.e2e.environment import (
    ARTIFACTS,
    MAIL_DOMAIN,
    MAIL_HOST,
    RELAY_HOST,
    TESTNET_IMAGE,
    Layout,
    Override,
    Stack,
    apply_overrides,
    banner,
    build_standin_image,
    keep_logs,
    layout,
    standin_config_for,
    start_standin,
    start_test_services,
    wait_for,
    wait_for_standin,
)
from tests.e2e.swarm_deploy import SwarmDeployment, deploy_swarm, swarm_leftovers, task_containers
from tests.testnet import zone

SWARM_EXAMPLE = "swarm"  # the example stack this deployment starts from
# Its own names and ports, clear of the container e2e stacks' (offsets 0 to 3).
WHERE = layout("swarm", 40)
SERVICES = ("dovecot", "postfix", "opendkim", "directory", "postgres", "roundcube", "balancer")


def swarm_overrides(where: Layout, pki: Mapping[str, Path]) -> dict[str, Override]:
    """The only differences between the swarm example stack and the deployed one."""
    return {
        "dev": Override(
            "true",
            "Roundcube is opened over plain HTTP on loopback, with no TLS proxy in front; dev only lifts the "
            "https:// rule for roundcube_url and authentik_url"),
        "roundcube_url": Override(
            where.roundcube_url, "the balancer's own published port, clear of every other stack on the machine"),
        "authentik_url": Override(
            where.auth_url, "the stand-in on the overlay network under authentik's name and its own HTTPS port"),
        "mail_domain": Override(MAIL_DOMAIN, "the stand-in's users have addresses in the test domain"),
        "mail_hostname": Override(MAIL_HOST, "the name in the test CA's mail certificate"),
        "directory": Override(
            {"source": "authentik", "postmaster": f"alice@{MAIL_DOMAIN}", "interval": 60},
            "the postmaster mailbox is a user of the test domain (example.com's team address is not)"),
        "docker_host": Override(
            ENGINE, "this machine's engine, a one-node swarm, instead of the mail node over ssh"),
        "ports": Override(
            dict(where.ports), "own host ports; a swarm binds them on every address, the tests use 127.0.0.1 only"),
        "tls": Override(
            {"cert_file": str(pki["mail_cert"]), "key_file": str(pki["mail_key"])},
            "the certificate and key of the test CA, on this node, instead of Let's Encrypt's files"),
        "relay_host": Override(
            f"[{RELAY_HOST}]:25",
            "mail for other domains goes to the test's receiving SMTP server on the overlay network, never "
            "to the internet"),
    }


def swarm_config(where: Layout, pki: Mapping[str, Path]) -> StackConfig:
    return apply_overrides(read_stack(SWARM_EXAMPLE), swarm_overrides(where, pki))


def mail_node_label(config: StackConfig) -> str:
    """The label the stack places its mail services by (settings: swarm.mail_node_label)."""
    swarm = config.get("swarm")
    return json.loads(swarm)["mail_node_label"] if swarm else "roundcube-authentik.mail"


@contextlib.contextmanager
def one_node_swarm(engine: docker.DockerClient, label: str) -> Iterator[None]:
    """The engine as a swarm manager whose node carries `label=true`; undoes only what it did."""
    initialised = engine.info()["Swarm"]["LocalNodeState"] != "active"
    # `swarm init` also creates the network docker_gwbridge, which `swarm leave` keeps (with
    # endpoints Docker releases only later): it holds no container; the next `swarm init` reuses it.
    if initialised:
        # The manager's port on loopback only: nothing outside this machine is asked to join.
        engine.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    labelled = False
    try:
        node = engine.nodes.get(engine.info()["Swarm"]["NodeID"])
        spec = node.attrs["Spec"]
        if (spec.get("Labels") or {}).get(label) != "true":
            node.update({**spec, "Labels": {**(spec.get("Labels") or {}), label: "true"}})
            labelled = True
        yield
    finally:
        if labelled:
            node.reload()
            spec = node.attrs["Spec"]
            node.update({**spec, "Labels": {k: v for k, v in (spec.get("Labels") or {}).items() if k != label}})
        if initialised:
            engine.swarm.leave(force=True)


def remove_leftovers(engine: docker.DockerClient, where: Layout) -> None:
    """Clears what a previous run, killed mid-way, left behind: services first, then what they used."""
    if engine.info()["Swarm"]["LocalNodeState"] == "active":
        found = [item.split(" ", 1) for item in swarm_leftovers(engine, where.prefix)]
        services = {name for kind, name in found if kind == "service"}
        for name in services:
            engine.services.get(name).remove()
        wait_for(lambda: not task_containers(engine, services), "the old services' task containers to go", timeout=90)
        for kind, name in found:
            if kind != "service":
                {"secret": engine.secrets, "config": engine.configs}[kind].get(name).remove()
    for item in leftovers(engine, where.prefix):
        kind, name = item.split(" ", 1)
        {"container": lambda n: engine.containers.get(n).remove(force=True),
         "network": lambda n: engine.networks.get(n).remove(),
         "volume": lambda n: engine.volumes.get(n).remove(force=True)}[kind](name)


def check_engine(declared: Capture) -> None:
    """The program deploys to the engine these tests use, and to no other."""
    hosts = {r.inputs.get("host") for r in declared.of_type("pulumi:providers:docker")}
    if hosts != {ENGINE}:
        raise UnsupportedDeclaration(f"the stack deploys to {sorted(map(str, hosts))}, the tests use {ENGINE}")


@contextlib.contextmanager
def running_swarm_stack(engine: docker.DockerClient, pki: dict[str, Path], where: Layout = WHERE) -> Iterator[Stack]:
    """Deploys the swarm stack and the stand-in; removes all of it on the way out, whatever happens."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    remove_leftovers(engine, where)
    config = swarm_config(where, pki)
    declared = capture(where.stack, config, placeholders=False)
    check_engine(declared)
    images = build_images(engine, declared, trusted_ca=pki["ca"])
    build_standin_image(engine, where)
    zone.build_image(engine, TESTNET_IMAGE)
    standin_config = standin_config_for(declared, where)
    tls = {"cert": pki["auth_cert"], "key": pki["auth_key"]}
    slug = declared.one("authentik:index/application:Application").inputs["slug"]
    standin: list[Any] = []

    def test_services(deployment: SwarmDeployment) -> list[str]:
        # Before any service: the directory sync's first round and Dovecot's first key fetch find authentik.
        resolver = start_test_services(engine, declared, where.prefix)(deployment)  # type: ignore[arg-type]
        standin.append(start_standin(engine, deployment, standin_config, tls, where))  # type: ignore[arg-type]
        deployment.test_services.append(standin[0])
        wait_for_standin(pki["ca"], where, slug)
        return resolver

    with one_node_swarm(engine, mail_node_label(config)):
        deployment = deploy_swarm(engine, declared, images, test_services)
        stack: Stack | None = None
        try:
            stack = Stack(declared, deployment, pki["ca"], standin[0], standin_config, engine, tls,  # type: ignore[arg-type]
                          where, config, trusted_ca=pki["ca"])
            # Every task runs and passed its healthcheck; these are the published ports, seen from the host.
            wait_for(lambda: requests.get(where.roundcube_url, timeout=3).status_code == 200,
                     "Roundcube through the balancer's published port", timeout=30)
            smtp, imaps_port = where.ports["smtp"], where.ports["imaps"]
            assert smtp is not None and imaps_port is not None
            wait_for(lambda: banner(smtp), "Postfix's published port", timeout=30)
            imaps = ssl.create_default_context(cafile=str(pki["ca"]))
            wait_for(lambda: banner(imaps_port, imaps), "Dovecot's published IMAPS port", timeout=30)
            yield stack
        finally:
            keep_logs(deployment, stack, where, SERVICES)
            deployment.remove()
            left = [*swarm_leftovers(engine, where.prefix), *leftovers(engine, where.prefix)]
            assert not left, f"the deployment's removal left {left}"

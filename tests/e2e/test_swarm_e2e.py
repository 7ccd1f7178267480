"""The swarm example stack on a one-node swarm: every service runs as declared,
a person logs in through the balancer and authentik, mail goes round, and a
session survives the Roundcube replica that served it.

The tests run in file order against one deployed stack (swarm_environment.py);
the browser session opened by the login test is used again by the later ones.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import docker
import pytest
from playwright.sync_api import Browser, Page

from tests.e2e import mailclients
from tests.e2e.environment import Stack, wait_for
from offline.capture import capture
from tests.e2e.deploy import UnsupportedDeclaration, leftovers
from tests.e2e.swarm_deploy import SERVICE, SwarmDeployment, deploy_swarm, read_back, replicas, swarm_leftovers
from tests.e2e.swarm_environment import (
    WHERE,
    mail_node_label,
    one_node_swarm,
    remove_leftovers,
    running_swarm_stack,
    swarm_config,
)
from tests.e2e.test_webmail import ALICE, BOB, chromium, imap, login_through_authentik, send_in_roundcube, tokens, \
    wait_for_inbox

pytestmark = pytest.mark.e2e

# Every request of the test's browser carries it; Roundcube's access log keeps the User-Agent
# (not the query string), so each replica's log shows which of the person's requests it served.
BROWSER = f"roundcube-authentik-e2e-swarm/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def swarm_stack(engine: docker.DockerClient, pki: dict[str, Path],
                container_stacks: contextlib.ExitStack) -> Iterator[Stack]:
    container_stacks.close()  # see conftest.py: no container-mode stack may outlive the swarm
    with running_swarm_stack(engine, pki) as running:
        yield running


@pytest.fixture(scope="module")
def alice_page(swarm_stack: Stack, pki: dict) -> Iterator[Page]:
    browser: Browser
    with chromium(pki) as browser:
        context = browser.new_context(user_agent=BROWSER)
        try:
            yield context.new_page()
        finally:
            context.close()


def swarm(stack: Stack) -> SwarmDeployment:
    assert isinstance(stack.deployment, SwarmDeployment)
    return stack.deployment


def _when(line: str) -> datetime:
    """Docker's timestamp in front of a log line (RFC 3339, up to nine fraction digits)."""
    stamp = line.split(" ", 1)[0]
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    moment = datetime.strptime(seconds, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    return moment.replace(microsecond=int((fraction or "0")[:6].ljust(6, "0")))


def browser_requests(container: Any) -> list[tuple[datetime, str]]:
    """(when, access-log line) of every request of the test's browser this replica served."""
    log = container.logs(stdout=True, stderr=False, timestamps=True).decode(errors="replace")
    return [(_when(line), line) for line in log.splitlines() if BROWSER in line]


def test_a_deployment_that_fails_midway_removes_what_it_created(engine: docker.DockerClient, pki: dict) -> None:
    config = swarm_config(WHERE, pki)
    declared = capture(WHERE.stack, config, placeholders=False)
    for service in declared.of_type(SERVICE):
        service.inputs["taskSpec"]["containerSpec"]["env"] = {"SURPRISE": "1"}  # an input the deployer does not know
    with one_node_swarm(engine, mail_node_label(config)):
        remove_leftovers(engine, WHERE)
        with pytest.raises(UnsupportedDeclaration, match="env"):
            # After the network, the volumes, the secrets and the configs were created.
            deploy_swarm(engine, declared, images={})
        assert [*swarm_leftovers(engine, WHERE.prefix), *leftovers(engine, WHERE.prefix)] == []


def test_every_service_runs_its_replicas_healthy_and_reads_back_as_declared(swarm_stack: Stack) -> None:
    deployment = swarm(swarm_stack)
    for declared in swarm_stack.capture.of_type(SERVICE):
        service = declared.name.split("-", 1)[1]  # mail-dovecot -> dovecot
        containers = deployment.containers(service)
        assert len(containers) == replicas(declared), service
        for container in containers:
            assert container.attrs["State"]["Health"]["Status"] == "healthy", (service, container.name)
    # What the provider would store now (all tasks settled) is still what the program declares.
    assert read_back(deployment, swarm_stack.capture) == []


def test_browser_login_through_the_balancer_reaches_the_inbox(swarm_stack: Stack, alice_page: Page) -> None:
    login_through_authentik(alice_page, ALICE, WHERE)
    wait_for_inbox(alice_page)
    assert ALICE in alice_page.content(), "Roundcube shows the logged-in identity"
    assert "token: authorization_code for alice" in swarm_stack.logs("authentik")
    # The login's requests went to both replicas: the OAuth state and the session live in PostgreSQL.
    served = [c for c in swarm(swarm_stack).containers("roundcube") if browser_requests(c)]
    assert len(served) == 2, "the balancer sent the person's requests to both replicas"


def test_mail_sent_in_roundcube_arrives_in_bobs_inbox(swarm_stack: Stack, alice_page: Page) -> None:
    subject = f"Swarm round trip {uuid.uuid4().hex[:8]}"
    send_in_roundcube(alice_page, BOB, subject, "Hello Bob, from a Roundcube replica through Postfix and Dovecot.",
                      WHERE)
    bob = imap(swarm_stack, BOB, tokens(swarm_stack, BOB)["access_token"])
    try:
        wait_for(lambda: subject in mailclients.inbox_subjects(bob), "the message in Bob's inbox", timeout=30)
    finally:
        bob.logout()


def test_the_session_survives_losing_the_replica_that_served_it(swarm_stack: Stack, alice_page: Page) -> None:
    deployment = swarm(swarm_stack)
    alice_page.goto(WHERE.roundcube_url + "/?_task=mail&_mbox=INBOX")
    wait_for_inbox(alice_page)
    replicas_now = deployment.containers("roundcube")
    assert len(replicas_now) == 2
    # The replica that answered the person's latest request goes away (SIGKILL, then removed).
    latest = {c.id: max(when for when, _ in browser_requests(c)) for c in replicas_now}
    killed = next(c for c in replicas_now if latest[c.id] == max(latest.values()))
    survivor = next(c for c in replicas_now if c.id != killed.id)
    survivor_before = len(browser_requests(survivor))
    authorizations = swarm_stack.logs("authentik").count("token: authorization_code")
    killed.remove(force=True, v=True)  # with the image's anonymous volume, as Swarm removes a task

    alice_page.goto(WHERE.roundcube_url + "/?_task=mail&_mbox=INBOX")
    wait_for_inbox(alice_page)
    # The page load happened while one replica was down: the killed container is gone, and the
    # swarm's replacement has not passed its first healthcheck (30 s after its start) yet.
    running = [t["Status"]["ContainerStatus"]["ContainerID"] for t in deployment.running_tasks("roundcube")]
    with pytest.raises(docker.errors.NotFound):
        swarm_stack.client.containers.get(killed.id)
    assert running == [survivor.id], f"one replica running while the page loaded, found {running}"

    # Without a new login: the same session, read from PostgreSQL by the survivor.
    assert "_task=login" not in alice_page.url and ALICE in alice_page.content()
    assert swarm_stack.logs("authentik").count("token: authorization_code") == authorizations
    assert len(browser_requests(survivor)) > survivor_before, "the survivor served the page"

    # The swarm replaces the lost replica.
    wait_for(lambda: len(deployment.running_tasks("roundcube")) == 2,
             "the swarm to run a second Roundcube replica again", timeout=120)

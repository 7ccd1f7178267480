"""The `authentik_ca_file` path: authentik's certificate from a private CA, given as a file.

A second, smaller deployment of the e2e stack with one more override,
`authentik_ca_file`, on the unchanged product images: the containers' system
CA stores do not know the test CA, so every HTTPS call to authentik works only
through the uploaded file. The main stack covers the other path (system CAs,
as the prod example uses); its check is at the end of this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import docker
import pytest
from playwright.sync_api import Browser

from components.render import layout as render_layout
from tests.e2e.environment import Override, Stack, layout, running_stack, wait_for
from tests.e2e.test_webmail import ALICE, browser, imap, login_through_authentik, tokens, wait_for_inbox  # noqa: F401

pytestmark = pytest.mark.e2e

WHERE = layout("cafile", 2)
CA_IN_CONTAINER = render_layout.AUTHENTIK_CA_FILE


def _pem_body_line(ca_file: Path) -> str:
    """A line of the CA certificate's base64 body, unique to this run's CA."""
    return ca_file.read_text().splitlines()[3]


def _system_store_holds(stack: Stack, service: str, ca_file: Path) -> bool:
    result = stack.deployment.container(service).exec_run(
        ["grep", "-qF", _pem_body_line(ca_file), "/etc/ssl/certs/ca-certificates.crt"]
    )
    return result.exit_code == 0


@pytest.fixture(scope="module")
def ca_file_stack(engine: docker.DockerClient, pki: dict[str, Path]) -> Iterator[Stack]:
    extra = {
        "authentik_ca_file": Override(str(pki["ca"]), "the path under test: authentik's CA given as a file"),
        "tls": Override({"cert_file": str(pki["mail_cert"]), "key_file": str(pki["mail_key"]), "ca_file": str(pki["ca"])},
                        "the mail certificate's private CA as a file too (tls.ca_file): Roundcube's STARTTLS to "
                        "Dovecot and Postfix checks it, as nothing here is in the system store"),
    }
    with running_stack(engine, pki, where=WHERE, extra=extra, trust_test_ca_in_system_store=False) as running:
        yield running


def test_without_the_ca_in_the_system_store_the_uploaded_ca_file_is_what_is_trusted(ca_file_stack: Stack, pki: dict) -> None:
    for service in ("dovecot", "roundcube"):
        assert not _system_store_holds(ca_file_stack, service, pki["ca"]), f"{service}'s system store must not know the test CA"
        uploaded = ca_file_stack.deployment.container(service).exec_run(["cat", CA_IN_CONTAINER])
        assert uploaded.exit_code == 0 and uploaded.output.decode() == pki["ca"].read_text()


def test_a_browser_login_reaches_the_inbox_through_the_ca_file(ca_file_stack: Stack, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        login_through_authentik(page, ALICE, WHERE)
        wait_for_inbox(page)  # Roundcube's token request to authentik went over HTTPS, verified by the file
        assert ALICE in page.content()
    finally:
        context.close()
    assert "token: authorization_code for alice" in ca_file_stack.logs("authentik")


def test_dovecot_gets_authentiks_keys_through_the_ca_file_and_logs_in(ca_file_stack: Stack) -> None:
    # Local token validation: the container's JWKS sync fetched the signing
    # keys over HTTPS, trusting the stand-in only through the uploaded file.
    jwks = f"GET /application/o/{ca_file_stack.slug}/jwks/ -> 200"
    wait_for(lambda: jwks in ca_file_stack.logs("authentik"), "the JWKS sync's fetch")
    imap(ca_file_stack, ALICE, tokens(ca_file_stack, ALICE)["access_token"]).logout()


def test_the_main_stack_trusts_authentik_through_the_system_store_without_a_ca_file(stack: Stack, pki: dict) -> None:
    # The other path, as the prod example runs it: no authentik_ca_file, no CA uploaded.
    assert stack.config is not None and stack.config.get("authentik_ca_file") is None
    for service in ("dovecot", "roundcube"):
        assert _system_store_holds(stack, service, pki["ca"])
        assert CA_IN_CONTAINER not in stack.capture.uploads(service)
    imap(stack, ALICE, tokens(stack, ALICE)["access_token"]).logout()

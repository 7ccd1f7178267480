"""Roundcube with the rendered config.inc.php in its image: the login page,
the redirect to authentik, the sqlite database in its volume."""

from __future__ import annotations

import http.client
from urllib.parse import parse_qs, urlsplit

from components.render import layout
from components.render.roundcube import OAUTH_SCOPE
from daemon_harness import Stack, banner_http, exec_in, published_port, wait_until


def get(stack: Stack, path: str) -> http.client.HTTPResponse:
    """A request as the TLS proxy would pass it on: the public host name in Host."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports["http"], timeout=30)
    connection.request("GET", path, headers={"Host": urlsplit(stack.variant.settings.roundcube_url).netloc})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_the_login_page_offers_the_authentik_button(stack: Stack) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.ports["http"], timeout=30)
    connection.request("GET", "/")
    response = connection.getresponse()
    page = response.read().decode()
    assert response.status == 200, page[:2000]
    assert 'id="rcmloginoauth"' in page, page[:4000]
    assert "Login with authentik" in page
    assert stack.variant.settings.app_name in page or "&quot;" in page  # product_name, HTML-escaped


def test_the_oauth_button_redirects_to_authentik_with_the_registered_redirect_uri(stack: Stack) -> None:
    settings = stack.variant.settings
    response = get(stack, "/?_task=login&_action=oauth")
    assert response.status == 302, response.status
    location = urlsplit(response.getheader("Location"))
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{settings.authentik_url}/application/o/authorize/"
    query = {key: values[0] for key, values in parse_qs(location.query).items()}
    assert query["client_id"] == stack.variant.client_id
    # What authentik's provider has as its strict redirect URI.
    assert query["redirect_uri"] == settings.redirect_uri
    assert query["scope"] == OAUTH_SCOPE
    assert query["response_type"] == "code"
    assert query["state"]


def test_the_redirect_uri_reaches_roundcube_which_asks_authentiks_token_endpoint(stack: Stack) -> None:
    """authentik sends the browser back to the redirect URI with a code;
    Roundcube trades it at the token endpoint, over TLS trusting the stack's
    authentik CA (oauth_verify_peer = the CA file) in the prod variant."""
    before = len(stack.introspection_requests())
    response = get(stack, "/index.php/login/oauth?code=bogus-code&state=bogus-state")
    assert response.status == 200, response.status  # the fake code fails: back to the login page
    requests = stack.introspection_requests()[before:]
    assert [r["request"].split(" ")[:2] for r in requests] == [["POST", "/application/o/token/"]], stack.logs()
    assert requests[0]["form_client_id"] == stack.variant.client_id
    # Roundcube's own error log reaches `docker logs`.
    assert "OAuth token request failed" in stack.roundcube.logs().decode(errors="replace")


def test_the_entrypoint_created_the_sqlite_database_in_the_volume_and_keeps_it(stack: Stack) -> None:
    database = layout.ROUNDCUBE_DB_FILE
    owner = exec_in(stack.roundcube, ["stat", "-c", "%U:%G %a", database]).strip()
    assert owner == "www-data:www-data 640"
    version = exec_in(stack.roundcube, ["sqlite3", database, "SELECT value FROM system WHERE name = 'roundcube-version'"])
    assert version.strip().isdigit(), version
    # Roundcube itself uses it: a visit makes a session row.
    get(stack, "/")
    sessions = exec_in(stack.roundcube, ["sqlite3", database, "SELECT count(*) FROM session"])
    assert int(sessions) >= 1

    exec_in(stack.roundcube, ["sqlite3", database, "INSERT INTO system (name, value) VALUES ('rca-daemon-test', 'kept')"])
    stack.roundcube.restart(timeout=10)
    stack.ports["http"] = published_port(stack.roundcube, layout.HTTP_PORT)  # may move on restart
    wait_until("Roundcube after a restart", lambda: banner_http(stack.ports["http"]), [stack.roundcube])
    kept = exec_in(stack.roundcube, ["sqlite3", database, "SELECT value FROM system WHERE name = 'rca-daemon-test'"])
    assert kept.strip() == "kept"


def test_roundcube_logs_reach_the_container_output_without_query_strings(stack: Stack) -> None:
    get(stack, "/index.php/login/oauth?code=0123456789abcdef0123456789abcdef&state=xyz")
    logs = stack.roundcube.logs().decode(errors="replace")
    assert '"GET /index.php/login/oauth HTTP/1.1"' in logs  # Apache's access log on stdout
    # The callback's query carries the authorization code: never logged.
    assert "0123456789abcdef0123456789abcdef" not in logs

"""PostgreSQL (images/postgres) as Roundcube's shared database, and Roundcube
replicas on it (images/roundcube with a pgsql:// db_dsnw): issue 18.

PostgreSQL runs locked down as found here: its own user from the start (the
image's USER), no capability at all, a read-only root with one tmpfs
(/run/postgresql: socket and lock file), no-new-privileges. Roundcube runs
with the lock-down components/containers.py declares for it.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote


from components import service as containers
from components.render import layout
from components.render.roundcube import extract_json_document
from daemon_harness import (
    WWW_DATA_GID,
    Pki,
    Variant,
    Resources,
    Upload,
    container_logs,
    exec_in,
    hardened,
    make_variant,
    published_port,
    wait_until,
)

HERE = Path(__file__).resolve().parent
POSTGRES_UID = 5030  # images/postgres/Dockerfile
SECRET_FILE = "/run/secrets/roundcube-db-password"
DATA_DIR = "/var/lib/postgresql/data"
CLUSTER_DIR = f"{DATA_DIR}/17"
SCHEMA_LOCK = 7231684405  # images/roundcube/database-setup.php
ATTACHMENT_STORE = "/usr/local/share/rca-test/attachment_store.php"
HEALTHCHECK = containers.Healthcheck(["CMD", "/usr/local/bin/healthcheck"], start_period="30s")

# What PostgreSQL needs, found by running the image locked down: no
# capability (it never runs as root: initdb, the password step, the server
# and the healthcheck all ran with every capability dropped), and one
# writable folder besides its volume, /run/postgresql (without it the
# entrypoint stops, see below). Its dynamic shared memory goes to /dev/shm,
# Docker's own tmpfs (64 MB by default), writable under a read-only root.
# Until components/containers.py declares "postgres", these are what the
# tests run with; then they run with the declaration.
FOUND_CAPABILITIES: dict[str, str] = {}
FOUND_SCRATCH = {"/run/postgresql": f"size=1m,mode=0755,uid={POSTGRES_UID},gid={POSTGRES_UID}"}
CAPABILITIES = containers.CAPABILITIES["postgres"]
SCRATCH = containers.SCRATCH["postgres"]
assert (CAPABILITIES, SCRATCH) == (FOUND_CAPABILITIES, FOUND_SCRATCH), "what the program declares is what the tests found"
MEMORY = "256m"


def new_password() -> str:
    # Characters that need quoting in SQL, in a URL and in a shell.
    return secrets.token_urlsafe(18) + " '\"\\:@/%$`"


def hardened_postgres(scratch: Optional[dict[str, str]] = None) -> dict[str, Any]:
    return {
        "cap_drop": ["ALL"],
        "cap_add": sorted(f"CAP_{name}" for name in CAPABILITIES),
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": SCRATCH if scratch is None else scratch,
        "mem_limit": MEMORY,
        "memswap_limit": MEMORY,
        "log_config": {"type": "json-file", "config": containers.LOG_OPTS},
        "healthcheck": {
            "test": HEALTHCHECK.command,
            "interval": 2_000_000_000,  # checked often here: the tests wait for "healthy"
            "timeout": 10_000_000_000,
            "retries": HEALTHCHECK.retries,
            "start_period": 30_000_000_000,
        },
    }


def start_postgres(
    resources: Resources, images: dict[str, str], network: Any, volume: Any, password: str,
    what: str = "postgres", alias: Optional[str] = "postgres", **kwargs: Any,
) -> Any:
    """PostgreSQL with its data volume and the password file (uploaded as a
    file, owned by postgres, 0400: as a Docker secret with that uid and mode)."""
    files = {SECRET_FILE: Upload(f"{password}\n".encode(), 0o400, POSTGRES_UID, POSTGRES_UID)}
    options = hardened_postgres() | kwargs
    return resources.container(
        what, images["postgres"], files, network=network, alias=alias,
        volumes={volume.name: {"bind": DATA_DIR, "mode": "rw"}}, **options,
    )


def wait_healthy(container: Any, seconds: float = 90) -> None:
    def healthy() -> bool:
        container.reload()
        return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

    wait_until(f"{container.name} healthy", healthy, [container], seconds)


def as_postgres(container: Any, sql: str) -> str:
    """SQL as the postgres superuser, on the container's own socket (pg_hba: peer)."""
    return exec_in(container, ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql",
                               "-U", "postgres", "-d", "roundcube", "-c", sql]).strip()


def login(client: Any, password: str, user: str = "roundcube", database: str = "roundcube",
          sql: str = "SELECT current_user") -> tuple[int, str]:
    """A TCP login to the service `postgres` from another container of the network."""
    result = client.exec_run(
        ["psql", "-X", "-At", "-h", "postgres", "-U", user, "-d", database, "-c", sql],
        environment={"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"},
    )
    return result.exit_code, result.output.decode(errors="replace").strip()


def start_client(resources: Resources, images: dict[str, str], network: Any) -> Any:
    # Roundcube's image has psql (roundcube-pgsql depends on postgresql-client).
    return resources.container("client", images["roundcube"], {}, network=network, entrypoint=["sleep", "infinity"])


# -- PostgreSQL alone ------------------------------------------------------------


def test_postgres_runs_locked_down_as_its_own_user_and_its_healthcheck_passes(
    resources: Resources, images: dict[str, str]
) -> None:
    network = resources.network()
    password = new_password()
    postgres = start_postgres(resources, images, network, resources.volume("data"), password)
    wait_healthy(postgres)

    host = postgres.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and not CAPABILITIES
    assert host["ReadonlyRootfs"] is True and host["Tmpfs"] == SCRATCH
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    # PID 1 is the server itself, as postgres, with no capability at all.
    status = exec_in(postgres, ["cat", "/proc/1/status"])
    assert re.search(rf"^Uid:\s+{POSTGRES_UID}\s+{POSTGRES_UID}\s", status, re.M), status
    assert re.search(r"^CapBnd:\s+0+$", status, re.M) and re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert exec_in(postgres, ["cat", "/proc/1/cmdline"]).split("\0")[:3] == ["postgres", "-D", CLUSTER_DIR]
    for path in ("/usr/local/bin/probe", "/etc/postgresql/roundcube-authentik/pg_hba.conf", "/tmp/probe"):
        write = postgres.exec_run(["sh", "-c", f"echo x > {path}"], user="root")
        assert write.exit_code != 0 and b"Read-only file system" in write.output, (path, write.output)

    # The cluster in the volume: UTF8, C.UTF-8 (PostgreSQL's own provider), the role owns its database.
    assert exec_in(postgres, ["cat", f"{CLUSTER_DIR}/PG_VERSION"]).strip() == "17"
    assert as_postgres(postgres, "SELECT pg_encoding_to_char(encoding), datlocprovider, datlocale, "
                       "pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'roundcube'") == "UTF8|b|C.UTF-8|roundcube"
    assert as_postgres(postgres, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                       "WHERE rolname = 'roundcube'") == "t"
    logs = container_logs(postgres)
    assert "entrypoint: created a PostgreSQL 17 cluster" in logs
    # The healthcheck's connections (every 2 s here) leave nothing in the log.
    time.sleep(5)
    assert "FATAL" not in container_logs(postgres) and "ERROR" not in container_logs(postgres)

    # Without its tmpfs (the socket's folder) it stops at once and says why.
    bare = start_postgres(resources, images, network, resources.volume("bare"), password, what="no-tmpfs",
                          alias=None, **{"tmpfs": {}})
    assert bare.wait(timeout=60)["StatusCode"] == 1
    assert "/run/postgresql is not writable by postgres" in container_logs(bare)


def test_roundcube_logs_in_with_the_password_file_and_nothing_else_gets_in(
    resources: Resources, images: dict[str, str]
) -> None:
    network = resources.network()
    password = new_password()
    postgres = start_postgres(resources, images, network, resources.volume("data"), password)
    client = start_client(resources, images, network)
    wait_healthy(postgres)

    assert login(client, password) == (0, "roundcube")
    code, output = login(client, password + "x")
    assert code != 0 and 'password authentication failed for user "roundcube"' in output, output
    # pg_hba has one host line: roundcube, to its database. Nobody else over TCP.
    code, output = login(client, password, user="postgres")
    assert code != 0 and "no pg_hba.conf entry" in output, output
    code, output = login(client, password, database="postgres")
    assert code != 0 and "no pg_hba.conf entry" in output, output

    # The password is in no log and in nothing Docker shows.
    postgres.reload()
    assert password not in container_logs(postgres)
    assert password not in json.dumps(postgres.attrs)


def test_a_new_password_file_rotates_the_password_and_the_data_survives_a_crash_and_a_replacement(
    resources: Resources, images: dict[str, str]
) -> None:
    network = resources.network()
    volume = resources.volume("data")
    first, second = new_password(), new_password()
    postgres = start_postgres(resources, images, network, volume, first, what="postgres-1")
    client = start_client(resources, images, network)
    wait_healthy(postgres)
    assert login(client, first, sql="CREATE TABLE kept (note text); INSERT INTO kept VALUES ('before')")[0] == 0

    # Killed (no shutdown at all), then replaced by a container with a new
    # password file on the same volume: what a new Docker secret does.
    postgres.kill()
    postgres.wait(timeout=30)
    postgres.remove()
    postgres = start_postgres(resources, images, network, volume, second, what="postgres-2")
    wait_healthy(postgres)
    logs = container_logs(postgres)
    assert "database system was not properly shut down; automatic recovery in progress" in logs
    assert f"entrypoint: set the password of role roundcube from {SECRET_FILE}" in logs
    code, output = login(client, first)
    assert code != 0 and "password authentication failed" in output, output
    assert login(client, second, sql="SELECT note FROM kept") == (0, "before")

    # docker stop: PostgreSQL's fast shutdown (the image's STOPSIGNAL is
    # SIGINT), bounded even with a client in the middle of a statement.
    client.exec_run(["psql", "-X", "-h", "postgres", "-U", "roundcube", "-d", "roundcube", "-c",
                     "SELECT pg_sleep(600)"], environment={"PGPASSWORD": second}, detach=True)
    wait_until("the client's statement", lambda: as_postgres(
        postgres, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(600)%'") == "1", [postgres])
    assert postgres.attrs["Config"]["StopSignal"] == "SIGINT"
    started = time.monotonic()
    postgres.stop(timeout=30)
    assert time.monotonic() - started < 10
    assert postgres.wait(timeout=10)["StatusCode"] == 0
    logs = container_logs(postgres)
    assert "received fast shutdown request" in logs and "database system is shut down" in logs, logs


# -- Roundcube replicas on it --------------------------------------------------------


def pgsql_config(variant: Variant, host: str, password: str) -> bytes:
    """Roundcube's rendered config (components/render/roundcube.py) with a
    PostgreSQL DSN and database_attachments: what a swarm stack renders."""
    php = variant.roundcube_config()
    document = extract_json_document(php)
    rendered = json.dumps(document, indent=2, ensure_ascii=True)
    assert rendered in php
    document["db_dsnw"] = f"pgsql://roundcube:{quote(password, safe='')}@{host}/roundcube"
    document["plugins"] = ["database_attachments"]
    return php.replace(rendered, json.dumps(document, indent=2, ensure_ascii=True)).encode()


def create_roundcube(
    resources: Resources, images: dict[str, str], network: Any, variant: Variant, what: str, config: bytes
) -> Any:
    files = {
        layout.ROUNDCUBE_CONFIG: Upload(config, 0o640, 0, WWW_DATA_GID),
        ATTACHMENT_STORE: Upload((HERE / "attachment_store.php").read_bytes()),
    }
    return resources.container(
        what, images["roundcube"], files, network=network, start=False,
        ports={f"{layout.HTTP_PORT}/tcp": ("127.0.0.1", None)},
        **hardened("roundcube", variant.settings),
    )


def login_page(container: Any, cookie: Optional[str] = None) -> tuple[Optional[str], str]:
    """GET / : the session cookie Roundcube set (if any) and the login form's request token."""
    connection = http.client.HTTPConnection("127.0.0.1", published_port(container, layout.HTTP_PORT), timeout=30)
    connection.request("GET", "/", headers={"Cookie": f"roundcube_sessid={cookie}"} if cookie else {})
    response = connection.getresponse()
    page = response.read().decode()
    connection.close()
    assert response.status == 200, page[:2000]
    cookies = [c for c in response.msg.get_all("Set-Cookie") or [] if c.startswith("roundcube_sessid=")]
    token = re.search(r'name="_token" value="([^"]+)"', page)
    assert token, page[:2000]
    return (cookies[-1].split(";")[0].split("=", 1)[1] if cookies else None), token.group(1)


def attachment(replica: Any, plugin: str, user_id: str, session: str, what: str) -> str:
    return exec_in(replica, ["runuser", "-u", "www-data", "--", "php", ATTACHMENT_STORE, plugin, user_id, session, what])


def test_two_replicas_started_together_create_the_schema_once_and_share_sessions_and_attachments(
    resources: Resources, images: dict[str, str], pki: Pki
) -> None:
    network = resources.network()
    password = new_password()
    postgres = start_postgres(resources, images, network, resources.volume("data"), password)
    wait_healthy(postgres)
    variant = make_variant("dev", pki)
    config = pgsql_config(variant, "postgres", password)
    replicas = [create_roundcube(resources, images, network, variant, f"roundcube-{n}", config) for n in (1, 2)]

    # The test holds the schema lock while both start at the same moment, so
    # both wait for it and race when it is released.
    postgres.exec_run(["psql", "-X", "-h", "/run/postgresql", "-U", "postgres", "-d", "roundcube",
                       "-c", f"SELECT pg_advisory_lock({SCHEMA_LOCK})", "-c", "SELECT pg_sleep(120)"],
                      environment={"PGAPPNAME": "rca-test-lock-holder"}, detach=True)
    wait_until("the test's schema lock", lambda: as_postgres(
        postgres, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted") == "1", [postgres])
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda c: c.start(), replicas))
    for replica in replicas:
        wait_until(f"{replica.name} waiting for the lock",
                   lambda: "another replica holds the schema lock" in container_logs(replica), replicas)
    as_postgres(postgres, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'rca-test-lock-holder'")
    for replica in replicas:
        wait_healthy(replica)

    logs = [container_logs(replica) for replica in replicas]
    assert sum("database-setup: created the schema from" in log for log in logs) == 1, logs
    assert all("database-setup: schema is current (version 2022081200)" in log for log in logs), logs
    assert not any(re.search(r"\bERROR\b|PHP (Fatal|Warning)", log) for log in logs), logs
    assert as_postgres(postgres, "SELECT value FROM system WHERE name = 'roundcube-version'") == "2022081200"
    assert "ERROR" not in container_logs(postgres)  # e.g. no "relation ... already exists"
    assert not any(password in log for log in logs + [container_logs(postgres)])

    # A session begun on one replica is the same session on the other: the
    # login form's request token lives in the session row, in PostgreSQL.
    first, second = replicas
    session, token = login_page(first)
    assert session is not None
    assert login_page(second, session) == (None, token)
    assert as_postgres(postgres, f"SELECT count(*) FROM session WHERE sess_id = '{session}'") == "1"

    # The same check fails when the replicas do not share a database: a third
    # one on a PostgreSQL of its own (started first: it waits for it) finds no
    # session for the cookie and starts an empty one under that id (PHP keeps
    # the id it was sent), with a token of its own.
    other = create_roundcube(resources, images, network, variant, "roundcube-apart",
                             pgsql_config(variant, "postgres-apart", password))
    other.start()
    wait_until("the separate replica waiting for PostgreSQL",
               lambda: "does not answer yet, waiting up to 60s" in container_logs(other), [other])
    start_postgres(resources, images, network, resources.volume("data-apart"), password,
                   what="postgres-apart", alias="postgres-apart")
    wait_healthy(other)
    assert re.search(r"database-setup: PostgreSQL \(roundcube@postgres-apart:5432/roundcube\) answers after \d+s",
                     container_logs(other))
    other_token = login_page(other, session)[1]
    assert other_token != token

    # A compose attachment stored through one replica is found by the other
    # (database_attachments, from Debian's roundcube-plugins); the default
    # filesystem_attachments leaves it in the first replica's temp_dir.
    user_id = as_postgres(postgres, "INSERT INTO users (username, mail_host) VALUES ('alice@example.com', 'dovecot') "
                          "RETURNING user_id").splitlines()[0]
    stored = attachment(first, "database_attachments", user_id, session, "put")
    assert json.loads(attachment(second, "database_attachments", user_id, session, stored)) == {"data": "attachment bytes"}
    on_disk = attachment(first, "filesystem_attachments", user_id, session, "put")
    assert json.loads(attachment(second, "filesystem_attachments", user_id, session, on_disk)) == {"data": None}
    assert json.loads(attachment(first, "filesystem_attachments", user_id, session, on_disk)) == {"data": "attachment bytes"}


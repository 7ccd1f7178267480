"""Roundcube: the webmail users log into through authentik.

One Roundcube keeps its data in sqlite on a volume. Several replicas (in a
swarm, settings.roundcube_replicas) share one PostgreSQL instead, sessions
included, so a user's session survives the replica that served it, and sit
behind a balancer that publishes the one HTTP port (host-mode ports allow
one task per node and port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components import service as described
from components.service import WWW_DATA_GID, Bind, File, Healthcheck, Mount, Publish, ServiceSpec
from components.target import DeploymentTarget
from components.render import layout
from components.render.clients import render_autoconfig_xml, render_mobileconfig
from components.render.balancer import HEALTH_URI, render_balancer_cfg
from components.render.roundcube import render_roundcube_config
from components.settings import Settings


# Healthy when Apache serves Roundcube's login page (its login form's task field).
LOGIN_PAGE_CHECK = (
    f'$page = @file_get_contents("http://127.0.0.1:{layout.HTTP_PORT}/"); '
    """exit($page !== false && str_contains($page, 'name="_task" value="login"') ? 0 : 1);"""
)


@dataclass
class WebmailArgs:
    settings: Settings
    name_prefix: str
    target: DeploymentTarget
    image: pulumi.Input[str]
    client_id: pulumi.Input[str]
    client_secret: pulumi.Input[str]
    des_key: pulumi.Input[str]
    # With several replicas (settings.webmail_replicas > 1):
    database_password: Optional[pulumi.Input[str]] = None
    postgres_image: Optional[pulumi.Input[str]] = None
    balancer_image: Optional[pulumi.Input[str]] = None


# Healthy when the balancer answers itself (whatever the replicas do: they have their own checks).
BALANCER_CHECK = Healthcheck([
    "CMD", "bash", "-c",
    f"exec 3<>/dev/tcp/127.0.0.1/{layout.HTTP_PORT} && printf 'GET {HEALTH_URI} HTTP/1.0\\r\\n\\r\\n' >&3 "
    "&& read -r line <&3 && [[ \"$line\" == *' 200 '* ]]",
], start_period="10s")
POSTGRES_CHECK = Healthcheck(["CMD", "/usr/local/bin/healthcheck"], start_period="30s")


class Webmail(pulumi.ComponentResource):
    """Roundcube, reading mail from Dovecot and sending through Postfix, with its database."""

    url: str

    def __init__(self, name: str, args: WebmailArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:Webmail", name, None, opts)
        settings = args.settings
        replicas = settings.webmail_replicas
        shared = replicas > 1
        volumes: dict = {}
        if shared:
            assert args.database_password is not None and args.postgres_image and args.balancer_image
            volumes["pgdata"] = args.target.volume(
                self, f"{name}-postgres-data", f"{args.name_prefix}-roundcube-pg", settings.protect_volumes)
            self._postgres(name, args, volumes)
        else:
            volumes["database"] = args.target.volume(
                self, f"{name}-database", f"{args.name_prefix}-roundcube-db", settings.protect_volumes)
        # Holds the OAuth client secret, the DES key and (shared) the database password.
        rendered: pulumi.Output[str] = pulumi.Output.all(
            args.client_id, args.client_secret, args.des_key, args.database_password
        ).apply(lambda creds: render_roundcube_config(settings, creds[0], creds[1], creds[2], database_password=creds[3]))
        config: pulumi.Output[str] = pulumi.Output.secret(rendered)
        files = {layout.ROUNDCUBE_CONFIG: File(config, secret=True, mode="0640", group=WWW_DATA_GID)}
        if settings.authentik_ca_pem is not None:
            files[layout.AUTHENTIK_CA_FILE] = File(settings.authentik_ca_pem)
        if settings.clients.app_passwords:
            # Mail clients find the servers here (Thunderbird's autoconfig, Apple's profile).
            files[layout.AUTOCONFIG_FILE] = File(render_autoconfig_xml(settings))
            files[layout.MOBILECONFIG_FILE] = File(render_mobileconfig(settings).decode())

        http = [Publish(settings.ports.http, layout.HTTP_PORT, settings.address_of("http"))]
        self.container = args.target.service(
            self,
            f"{name}-roundcube",
            f"{args.name_prefix}-roundcube",
            ServiceSpec(
                service=layout.ROUNDCUBE_HOST,
                image=args.image,
                files=files,
                # Replicas are reached through the balancer, which publishes the port.
                publish=[] if shared else http,
                mounts=[] if shared else [Mount("database", layout.ROUNDCUBE_DB_DIR)],
                memory_mb=settings.memory_mb.roundcube,
                pids_limit=settings.pids_limit.roundcube,
                # Roundcube's login page, rendered by PHP through Apache.
                healthcheck=Healthcheck(["CMD", "php", "-r", LOGIN_PAGE_CHECK]),
                hosts=described.hosts_to_reach(settings.authentik_backchannel_url),
                # A private CA of the mail certificate (tls.ca_file), for the STARTTLS to Dovecot and Postfix.
                binds=[Bind(settings.tls.ca_file, layout.TLS_CA_FILE)] if settings.tls and settings.tls.ca_file else [],
                replicas=replicas,
                # sqlite's volume lives on one node; replicas on PostgreSQL go anywhere.
                placement="any" if shared else "mail",
            ),
            volumes,
        )
        if shared:
            assert args.balancer_image is not None
            args.target.service(
                self,
                f"{name}-balancer",
                f"{args.name_prefix}-balancer",
                ServiceSpec(
                    service=layout.BALANCER_HOST,
                    image=args.balancer_image,
                    files={layout.BALANCER_CONFIG: File(render_balancer_cfg())},
                    publish=http,
                    memory_mb=settings.memory_mb.balancer,
                    pids_limit=settings.pids_limit.balancer,
                    healthcheck=BALANCER_CHECK,
                ),
                volumes,
            )
        self.url = settings.roundcube_url
        self.register_outputs({"url": self.url})

    def _postgres(self, name: str, args: WebmailArgs, volumes: dict) -> None:
        """Roundcube's shared database (images/postgres), on the mail node with its volume."""
        settings = args.settings
        assert args.database_password is not None and args.postgres_image is not None
        line: pulumi.Output[str] = pulumi.Output.from_input(args.database_password).apply(lambda pw: pw + "\n")
        password: pulumi.Output[str] = pulumi.Output.secret(line)
        uid = str(layout.POSTGRES_UID)
        args.target.service(
            self,
            f"{name}-postgres",
            f"{args.name_prefix}-postgres",
            ServiceSpec(
                service=layout.POSTGRES_HOST,
                image=args.postgres_image,
                files={layout.POSTGRES_PASSWORD_FILE: File(password, secret=True, mode="0400", owner=uid, group=uid)},
                mounts=[Mount("pgdata", layout.POSTGRES_DATA_DIR)],
                memory_mb=settings.memory_mb.postgres,
                pids_limit=settings.pids_limit.postgres,
                healthcheck=POSTGRES_CHECK,
            ),
            volumes,
        )

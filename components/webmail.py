"""Roundcube: the webmail users log into through authentik."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components import containers
from components.containers import WWW_DATA_GID, Bind, File, Healthcheck, Mount, Publish, ServiceSpec
from components.render import layout
from components.render.clients import render_autoconfig_xml, render_mobileconfig
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
    network_name: pulumi.Input[str]
    image: pulumi.Input[str]
    client_id: pulumi.Input[str]
    client_secret: pulumi.Input[str]
    des_key: pulumi.Input[str]


class Webmail(pulumi.ComponentResource):
    """Roundcube with its sqlite database in a volume, reading mail from Dovecot and sending through Postfix."""

    url: str

    def __init__(self, name: str, args: WebmailArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:Webmail", name, None, opts)
        settings = args.settings
        volumes = {
            "database": containers.declare_volume(
                self, f"{name}-database", f"{args.name_prefix}-roundcube-db", settings.protect_volumes
            )
        }
        # Holds the OAuth client secret and the DES key.
        rendered: pulumi.Output[str] = pulumi.Output.all(args.client_id, args.client_secret, args.des_key).apply(
            lambda creds: render_roundcube_config(settings, creds[0], creds[1], creds[2])
        )
        config: pulumi.Output[str] = pulumi.Output.secret(rendered)
        files = {layout.ROUNDCUBE_CONFIG: File(config, mode="0640", group=WWW_DATA_GID)}
        if settings.authentik_ca_pem is not None:
            files[layout.AUTHENTIK_CA_FILE] = File(settings.authentik_ca_pem)
        if settings.clients.app_passwords:
            # Mail clients find the servers here (Thunderbird's autoconfig, Apple's profile).
            files[layout.AUTOCONFIG_FILE] = File(render_autoconfig_xml(settings))
            files[layout.MOBILECONFIG_FILE] = File(render_mobileconfig(settings).decode())

        self.container = containers.declare_container(
            self,
            f"{name}-roundcube",
            f"{args.name_prefix}-roundcube",
            ServiceSpec(
                service=layout.ROUNDCUBE_HOST,
                image=args.image,
                network_name=args.network_name,
                files=files,
                publish=[Publish(settings.ports.http, layout.HTTP_PORT, settings.address_of("http"))],
                mounts=[Mount("database", layout.ROUNDCUBE_DB_DIR)],
                memory_mb=settings.memory_mb.roundcube,
                pids_limit=settings.pids_limit.roundcube,
                # Roundcube's login page, rendered by PHP through Apache.
                healthcheck=Healthcheck(["CMD", "php", "-r", LOGIN_PAGE_CHECK]),
                hosts=containers.hosts_to_reach(settings.authentik_backchannel_url),
                # A private CA of the mail certificate (tls.ca_file), for the STARTTLS to Dovecot and Postfix.
                binds=[Bind(settings.tls.ca_file, layout.TLS_CA_FILE)] if settings.tls and settings.tls.ca_file else [],
            ),
            volumes,
            settings.docker_host,
        )
        self.url = settings.roundcube_url
        self.register_outputs({"url": self.url})

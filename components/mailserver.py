"""The mail server: Dovecot (IMAP, LMTP, auth for Postfix) and Postfix (SMTP in, submission)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components import containers
from components.containers import Bind, File, Mount, Publish, ServiceSpec
from components.render import layout
from components.render.dovecot import (
    render_dovecot_conf,
    render_introspection_filter_config,
    render_jwks_sync_config,
)
from components.render.postfix import render_postfix_main_cf, render_postfix_master_cf
from components.settings import Settings


@dataclass
class MailServerArgs:
    settings: Settings
    name_prefix: str
    network_name: pulumi.Input[str]
    dovecot_image: pulumi.Input[str]
    postfix_image: pulumi.Input[str]
    client_id: pulumi.Input[str]
    client_secret: pulumi.Input[str]


class MailServer(pulumi.ComponentResource):
    """Dovecot checks every OAuth2 token with authentik; Postfix asks Dovecot."""

    imap_endpoint: str
    submission_endpoint: str

    def __init__(self, name: str, args: MailServerArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:MailServer", name, None, opts)
        settings = args.settings
        ports = settings.ports

        volumes = {
            "mail": containers.declare_volume(self, f"{name}-mail", f"{args.name_prefix}-mail", settings.protect_volumes),
            "spool": containers.declare_volume(
                self, f"{name}-postfix-spool", f"{args.name_prefix}-postfix-spool", settings.protect_volumes
            ),
        }

        # The introspection URL inside carries the client secret.
        rendered: pulumi.Output[str] = pulumi.Output.all(args.client_id, args.client_secret).apply(
            lambda creds: render_dovecot_conf(settings, creds[0], creds[1])
        )
        dovecot_conf: pulumi.Output[str] = pulumi.Output.secret(rendered)
        dovecot_files = {layout.DOVECOT_CONF: File(dovecot_conf, mode="0600")}
        # The settings of the image's helper for token_validation (no secret inside).
        if settings.token_validation == "local":
            dovecot_files[layout.JWKS_SYNC_CONFIG] = File(
                pulumi.Output.from_input(args.client_id).apply(lambda client_id: render_jwks_sync_config(settings, client_id))
            )
        else:
            dovecot_files[layout.INTROSPECTION_FILTER_CONFIG] = File(render_introspection_filter_config(settings))
        postfix_files = {
            layout.POSTFIX_MAIN_CF: File(render_postfix_main_cf(settings)),
            layout.POSTFIX_MASTER_CF: File(render_postfix_master_cf(settings)),
        }
        if settings.authentik_ca_file is not None:
            dovecot_files[layout.AUTHENTIK_CA_FILE] = File(settings.authentik_ca_file.read_text())
        tls_mounts: list[Bind] = []
        if settings.tls is not None:
            tls_mounts = [
                Bind(settings.tls.cert_file, layout.TLS_CERT_FILE),
                Bind(settings.tls.key_file, layout.TLS_KEY_FILE),
            ]

        dovecot_publish = [Publish(ports.imaps, layout.IMAPS_PORT)] if ports.imaps else []
        if ports.imap:
            dovecot_publish.append(Publish(ports.imap, layout.IMAP_PORT))
        postfix_publish = [
            Publish(host, inside)
            for host, inside in ((ports.smtp, layout.SMTP_PORT), (ports.submission, layout.SUBMISSION_PORT))
            if host
        ]

        self.dovecot = containers.declare_container(
            self,
            f"{name}-dovecot",
            f"{args.name_prefix}-dovecot",
            ServiceSpec(
                service=layout.DOVECOT_HOST,
                image=args.dovecot_image,
                network_name=args.network_name,
                publish_address=settings.publish_address,
                files=dovecot_files,
                publish=dovecot_publish,
                mounts=[Mount("mail", layout.MAIL_DIR)],
                hosts=containers.hosts_to_reach(settings.authentik_backchannel_url),
                binds=tls_mounts,
            ),
            volumes,
        )
        self.postfix = containers.declare_container(
            self,
            f"{name}-postfix",
            f"{args.name_prefix}-postfix",
            ServiceSpec(
                service=layout.POSTFIX_HOST,
                image=args.postfix_image,
                network_name=args.network_name,
                publish_address=settings.publish_address,
                files=postfix_files,
                publish=postfix_publish,
                mounts=[Mount("spool", layout.POSTFIX_SPOOL_DIR)],
                binds=tls_mounts,
            ),
            volumes,
        )

        # With TLS, clients must use the certificate's name; without, the published address.
        reach = settings.host_name if settings.tls is not None else settings.publish_address
        self.imap_endpoint = (
            f"imaps://{settings.host_name}:{ports.imaps}" if ports.imaps
            else f"imap://{settings.publish_address}:{ports.imap}" if ports.imap else ""
        )
        self.submission_endpoint = f"smtp://{reach}:{ports.submission}" if ports.submission else ""
        self.register_outputs({"imap_endpoint": self.imap_endpoint, "submission_endpoint": self.submission_endpoint})

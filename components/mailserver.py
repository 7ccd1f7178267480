"""The mail server: Dovecot (IMAP, LMTP, auth for Postfix) and Postfix (SMTP in, submission)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_docker as docker

from components import service as described
from components.service import Bind, File, Healthcheck, Mount, Publish, ServiceSpec
from components.target import DeploymentTarget
from components.render import layout
from components.render.directory import render_directory_sync_config
from components.render.dovecot import (
    render_app_password_check_config,
    render_dovecot_conf,
    render_introspection_filter_config,
    render_jwks_sync_config,
)
from components.render.opendkim import render_opendkim_conf, render_opendkim_unbound_conf
from components.render.policyd_spf import render_policyd_spf_conf
from components.render.postfix import render_postfix_main_cf, render_postfix_master_cf
from components.settings import Settings


# Unhealthy while the sync's rounds fail (authentik away, token revoked) or are refused.
DIRECTORY_SYNC_CHECK = Healthcheck(["CMD", layout.DIRECTORY_SYNC, layout.DIRECTORY_SYNC_CONFIG, "--check"])


@dataclass
class MailServerArgs:
    settings: Settings
    name_prefix: str
    target: DeploymentTarget
    dovecot_image: pulumi.Input[str]
    postfix_image: pulumi.Input[str]
    opendkim_image: pulumi.Input[str]
    client_id: pulumi.Input[str]
    client_secret: pulumi.Input[str]
    dkim_private_key: pulumi.Input[str]  # PEM, secret: the key of settings.dkim_selector
    # directory: authentik: the directory sync's authentik API key (secret).
    directory_token: Optional[pulumi.Input[str]] = None


class MailServer(pulumi.ComponentResource):
    """Dovecot checks every OAuth2 token with authentik; Postfix asks Dovecot."""

    imap_endpoint: str
    submission_endpoint: str

    def __init__(self, name: str, args: MailServerArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:MailServer", name, None, opts)
        settings = args.settings
        ports = settings.ports

        volumes = {
            "mail": args.target.volume(self, f"{name}-mail", f"{args.name_prefix}-mail", settings.protect_volumes),
            "spool": args.target.volume(
                self, f"{name}-postfix-spool", f"{args.name_prefix}-postfix-spool", settings.protect_volumes
            ),
            # Dovecot's auth socket for Postfix (layout.SASL_SOCKET).
            "sasl": args.target.shared_volume(self, f"{name}-sasl", f"{args.name_prefix}-sasl"),
        }
        with_directory = settings.directory.source == "authentik"
        if with_directory:
            # The directory's state (which folder belongs to which authentik user) is data.
            volumes["directory"] = args.target.volume(
                self, f"{name}-directory", f"{args.name_prefix}-directory", settings.protect_volumes
            )
        directory_mounts = [Mount("directory", layout.DIRECTORY_DIR, read_only=True)] if with_directory else []

        # The introspection URL inside carries the client secret.
        rendered: pulumi.Output[str] = pulumi.Output.all(args.client_id, args.client_secret).apply(
            lambda creds: render_dovecot_conf(settings, creds[0], creds[1])
        )
        dovecot_conf: pulumi.Output[str] = pulumi.Output.secret(rendered)
        dovecot_files = {layout.DOVECOT_CONF: File(dovecot_conf, secret=True, mode="0600")}
        # The settings of the image's helper for token_validation (no secret inside).
        if settings.token_validation == "local":
            dovecot_files[layout.JWKS_SYNC_CONFIG] = File(
                pulumi.Output.from_input(args.client_id).apply(lambda client_id: render_jwks_sync_config(settings, client_id))
            )
        else:
            dovecot_files[layout.INTROSPECTION_FILTER_CONFIG] = File(render_introspection_filter_config(settings))
        if settings.clients.app_passwords:
            # Holds the client secret: root's alone; the checker reads it, then drops to nobody.
            dovecot_files[layout.APP_PASSWORD_CHECK_CONFIG] = File(
                pulumi.Output.secret(
                    pulumi.Output.all(args.client_id, args.client_secret).apply(
                        lambda creds: render_app_password_check_config(settings, creds[0], creds[1])
                    )
                ),
                secret=True,
                mode="0600",
            )
        postfix_files = {
            layout.POSTFIX_MAIN_CF: File(render_postfix_main_cf(settings)),
            layout.POSTFIX_MASTER_CF: File(render_postfix_master_cf(settings)),
            layout.POLICYD_SPF_CONF: File(render_policyd_spf_conf(settings)),
        }
        # OpenDKIM refuses a key that anyone but its own user could read.
        opendkim_files = {
            layout.OPENDKIM_CONF: File(render_opendkim_conf(settings)),
            layout.OPENDKIM_UNBOUND_CONF: File(render_opendkim_unbound_conf()),
            layout.dkim_key_file(settings.dkim_selector): File(
                pulumi.Output.secret(args.dkim_private_key),
                secret=True,
                mode="0600",
                owner=str(layout.OPENDKIM_UID),
                group=str(layout.OPENDKIM_GID),
            ),
        }
        if settings.authentik_ca_pem is not None:
            dovecot_files[layout.AUTHENTIK_CA_FILE] = File(settings.authentik_ca_pem)
        tls_mounts: list[Bind] = []
        if settings.tls is not None:
            tls_mounts = [
                Bind(settings.tls.cert_file, layout.TLS_CERT_FILE),
                Bind(settings.tls.key_file, layout.TLS_KEY_FILE),
            ]

        at = settings.address_of
        dovecot_publish = [Publish(ports.imaps, layout.IMAPS_PORT, at("imaps"))] if ports.imaps else []
        if ports.imap:
            dovecot_publish.append(Publish(ports.imap, layout.IMAP_PORT, at("imap")))
        postfix_publish = [
            Publish(host, inside, at(name))
            for name, host, inside in (
                ("smtp", ports.smtp, layout.SMTP_PORT),
                ("submission", ports.submission, layout.SUBMISSION_PORT),
            )
            if host
        ]

        self.dovecot = args.target.service(
            self,
            f"{name}-dovecot",
            f"{args.name_prefix}-dovecot",
            ServiceSpec(
                service=layout.DOVECOT_HOST,
                image=args.dovecot_image,
                files=dovecot_files,
                publish=dovecot_publish,
                mounts=[Mount("mail", layout.MAIL_DIR), Mount("sasl", layout.SASL_SOCKET_DIR), *directory_mounts],
                memory_mb=settings.memory_mb.dovecot,
                pids_limit=settings.pids_limit.dovecot,
                healthcheck=described.greets(layout.IMAP_PORT, "* OK"),
                hosts=described.hosts_to_reach(settings.authentik_backchannel_url),
                binds=tls_mounts,
            ),
            volumes,
        )
        self.postfix = args.target.service(
            self,
            f"{name}-postfix",
            f"{args.name_prefix}-postfix",
            ServiceSpec(
                service=layout.POSTFIX_HOST,
                image=args.postfix_image,
                files=postfix_files,
                publish=postfix_publish,
                # Postfix only connects to the socket: a read-only mount allows that.
                mounts=[
                    Mount("spool", layout.POSTFIX_SPOOL_DIR),
                    Mount("sasl", layout.SASL_SOCKET_DIR, read_only=True),
                    *directory_mounts,
                ],
                memory_mb=settings.memory_mb.postfix,
                pids_limit=settings.pids_limit.postfix,
                healthcheck=described.greets(layout.SMTP_PORT, "220 "),
                binds=tls_mounts,
            ),
            volumes,
        )

        # Signs submitted mail and verifies inbound mail for Postfix (its milter).
        # OpenDKIM is PID 1: if it dies the container exits and Docker restarts it.
        self.opendkim = args.target.service(
            self,
            f"{name}-opendkim",
            f"{args.name_prefix}-opendkim",
            ServiceSpec(
                service=layout.OPENDKIM_HOST,
                image=args.opendkim_image,
                files=opendkim_files,
                memory_mb=settings.memory_mb.opendkim,
                pids_limit=settings.pids_limit.opendkim,
                healthcheck=Healthcheck(["CMD", "/usr/local/bin/healthcheck"], start_period="10s"),
            ),
            volumes,
        )

        if with_directory:
            self.directory = self._directory_sync(name, args, volumes)

        # With TLS, clients must use the certificate's name; without, the published address.
        reach = settings.host_name if settings.tls is not None else settings.address_of("submission")
        self.imap_endpoint = (
            f"imaps://{settings.host_name}:{ports.imaps}" if ports.imaps
            else f"imap://{settings.address_of('imap')}:{ports.imap}" if ports.imap else ""
        )
        self.submission_endpoint = f"smtp://{reach}:{ports.submission}" if ports.submission else ""
        self.register_outputs({"imap_endpoint": self.imap_endpoint, "submission_endpoint": self.submission_endpoint})

    def _directory_sync(self, name: str, args: MailServerArgs, volumes: dict[str, docker.Volume]) -> pulumi.CustomResource:
        """authentik's users and groups as Postfix's maps and Dovecot's passwd-file (images/postfix/directory-sync.py).

        Its own container of the Postfix image (postmap builds the maps), as
        its own user, holding the only copy of the API key outside Pulumi.
        """
        settings = args.settings
        assert args.directory_token is not None
        files = {
            layout.DIRECTORY_SYNC_CONFIG: File(render_directory_sync_config(settings)),
            layout.DIRECTORY_TOKEN_FILE: File(
                pulumi.Output.secret(args.directory_token),
                secret=True,
                mode="0600",
                owner=str(layout.DIRECTORY_UID),
                group=str(layout.DIRECTORY_GID),
            ),
        }
        if settings.authentik_ca_pem is not None:
            files[layout.AUTHENTIK_CA_FILE] = File(settings.authentik_ca_pem)
        return args.target.service(
            self,
            f"{name}-directory",
            f"{args.name_prefix}-directory",
            ServiceSpec(
                service="directory",
                image=args.postfix_image,
                files=files,
                mounts=[Mount("directory", layout.DIRECTORY_DIR)],
                memory_mb=settings.memory_mb.directory,
                pids_limit=settings.pids_limit.directory,
                entrypoint=layout.DIRECTORY_SYNC_ENTRYPOINT,
                command=[layout.DIRECTORY_SYNC_CONFIG],
                user=f"{layout.DIRECTORY_UID}:{layout.DIRECTORY_GID}",
                healthcheck=DIRECTORY_SYNC_CHECK,
                hosts=described.hosts_to_reach(settings.authentik_backchannel_url),
            ),
            volumes,
        )

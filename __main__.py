"""roundcube-authentik: single-sign-on webmail for one environment stack.

Reads the stack's settings, builds the components, exports the endpoints.
"""

import pulumi

from components.credentials import Credentials
from components.directory import DirectoryReader, DirectoryReaderArgs
from components.dkim import DkimKeys
from components.dockerhost import DockerHost, DockerHostArgs
from components.identity import IdentityProviderClient, IdentityProviderClientArgs
from components.images import REPLICA_SERVICES, SERVICES, ServiceImages, ServiceImagesArgs
from components.mailserver import MailServer, MailServerArgs
from components.render.dns import dns_records, mta_sts_policy, mta_sts_policy_url
from components.settings import SettingsError, load_settings
from components.target import check_service_names, deployment_target, network_driver
from components.stack_config import stack_config
from components.webmail import Webmail, WebmailArgs

stack = pulumi.get_stack()
prefix = f"roundcube-authentik-{stack}"

try:
    # The settings' namespace is the project's name in Pulumi.yaml, whatever it is.
    settings = load_settings(stack_config(), pulumi.get_project())
    check_service_names(settings, stack, prefix)
except SettingsError as err:
    # Before any resource exists: preview stops with the sentence, no traceback.
    raise pulumi.RunError(str(err)) from None

# Several Roundcube replicas (deployment: swarm) share a PostgreSQL behind a balancer.
replicated = settings.webmail_replicas > 1
credentials = Credentials("credentials", database=replicated)
dkim = DkimKeys("dkim", settings.dkim_selectors)

identity = IdentityProviderClient(
    "authentik",
    IdentityProviderClientArgs(
        app_name=settings.app_name,
        app_slug=settings.app_slug,
        launch_url=settings.roundcube_url,
        redirect_uri=settings.redirect_uri,
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        authorization_flow=settings.authorization_flow,
        invalidation_flow=settings.invalidation_flow,
        signing_key=settings.signing_key,
        access_token_validity=settings.access_token_validity,
        refresh_token_validity=settings.refresh_token_validity,
        allowed_group=settings.allowed_group,
    ),
)

# directory: authentik: a read-only authentik account for the directory sync.
directory_reader = (
    DirectoryReader("directory", DirectoryReaderArgs(app_name=settings.app_name, app_slug=settings.app_slug))
    if settings.directory.source == "authentik"
    else None
)

host = DockerHost("docker", DockerHostArgs(
    docker_host=settings.docker_host, network_name=f"{prefix}-private", network_driver=network_driver(settings)))
on_host = pulumi.ResourceOptions(providers={"docker": host.provider})
# Containers on one host, or services on a swarm: chosen here, once.
target = deployment_target(settings, host.network_name, host.network_id)

images = ServiceImages(
    "images",
    ServiceImagesArgs(base_image=settings.base_image, tag=stack, rebuild_stamp=settings.image_rebuild,
                      services=(*SERVICES, *REPLICA_SERVICES) if replicated else SERVICES),
    opts=on_host,
)

mail = MailServer(
    "mail",
    MailServerArgs(
        settings=settings,
        name_prefix=prefix,
        target=target,
        dovecot_image=images.ids["dovecot"],
        postfix_image=images.ids["postfix"],
        opendkim_image=images.ids["opendkim"],
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        dkim_private_key=dkim.signing_key_pem,
        directory_token=directory_reader.token_key if directory_reader else None,
    ),
    opts=on_host,
)

webmail = Webmail(
    "webmail",
    WebmailArgs(
        settings=settings,
        name_prefix=prefix,
        target=target,
        image=images.ids["roundcube"],
        client_id=credentials.client_id,
        client_secret=credentials.client_secret,
        des_key=credentials.des_key,
        database_password=credentials.database_password,
        postgres_image=images.ids.get("postgres"),
        balancer_image=images.ids.get("balancer"),
    ),
    opts=on_host,
)

pulumi.export("webmail_url", webmail.url)
pulumi.export("application_slug", identity.application_slug)
pulumi.export("launch_url", identity.launch_url)
# The client id is public by OAuth's design (every login URL shows it), and
# mail clients need it; it stays secret in state and in every resource.
pulumi.export("client_id", pulumi.Output.unsecret(credentials.client_id))
pulumi.export("client_secret", credentials.client_secret)
pulumi.export("imap_endpoint", mail.imap_endpoint)
pulumi.export("submission_endpoint", mail.submission_endpoint)
# What to publish in DNS for mail_domain (public keys only): see the README.
selectors = settings.dkim_selectors
pulumi.export(
    "dns_records",
    pulumi.Output.all(*(dkim.public_keys[s] for s in selectors)).apply(
        lambda pems: dns_records(settings, dict(zip(selectors, pems)))
    ),
)
if settings.tls is not None:
    pulumi.export("mta_sts_policy", {"url": mta_sts_policy_url(settings), "content": mta_sts_policy(settings)})

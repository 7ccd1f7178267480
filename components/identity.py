"""authentik's side: the scope mapping, the OAuth2/OpenID provider and the application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_authentik as authentik

from components.oauth_scopes import DOVECOT_PROFILE_SCOPE, MANAGED_SCOPES

# The body of the project's scope mapping (DOVECOT_PROFILE_SCOPE). authentik
# runs it as a Python function with `request` in scope.
DOVECOT_PROFILE_EXPRESSION = """\
return {
    "name": request.user.name,
    "given_name": request.user.name,
    "family_name": "",
    "preferred_username": request.user.username,
    "nickname": request.user.username,
}
"""


@dataclass
class IdentityProviderClientArgs:
    app_name: pulumi.Input[str]
    app_slug: pulumi.Input[str]
    launch_url: pulumi.Input[str]
    redirect_uri: pulumi.Input[str]
    client_id: pulumi.Input[str]
    client_secret: pulumi.Input[str]
    authorization_flow: str
    invalidation_flow: str
    signing_key: str
    access_token_validity: pulumi.Input[str]
    refresh_token_validity: pulumi.Input[str]
    allowed_group: Optional[str] = None


class IdentityProviderClient(pulumi.ComponentResource):
    """Registers Roundcube with authentik as a confidential OAuth2/OpenID client."""

    provider_id: pulumi.Output[str]
    application_slug: pulumi.Output[str]
    launch_url: pulumi.Output[str]

    def __init__(self, name: str, args: IdentityProviderClientArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:IdentityProviderClient", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        lookup = pulumi.InvokeOptions(parent=self)

        authorization_flow = authentik.get_flow_output(slug=args.authorization_flow, opts=lookup)
        invalidation_flow = authentik.get_flow_output(slug=args.invalidation_flow, opts=lookup)
        # Only the key pair's id: fetching the private key would put it in state.
        signing_key = authentik.get_certificate_key_pair_output(
            name=args.signing_key, fetch_certificate=False, fetch_key=False, opts=lookup
        )
        managed = [
            authentik.get_property_mapping_provider_scope_output(
                managed=f"goauthentik.io/providers/oauth2/scope-{scope}", opts=lookup
            ).id
            for scope in MANAGED_SCOPES
        ]

        profile = authentik.PropertyMappingProviderScope(
            f"{name}-{DOVECOT_PROFILE_SCOPE}",
            name=pulumi.Output.concat(args.app_name, " ", DOVECOT_PROFILE_SCOPE),
            scope_name=DOVECOT_PROFILE_SCOPE,
            description="Profile claims for Dovecot and Roundcube",
            expression=DOVECOT_PROFILE_EXPRESSION,
            opts=child,
        )

        provider = authentik.ProviderOauth2(
            f"{name}-provider",
            name=args.app_name,
            client_type="confidential",
            client_id=args.client_id,
            client_secret=args.client_secret,
            authorization_flow=authorization_flow.id,
            invalidation_flow=invalidation_flow.id,
            # strict = exact string equality, so nothing but Roundcube's own
            # callback can receive a code.
            allowed_redirect_uris=[{"matching_mode": "strict", "url": args.redirect_uri}],
            property_mappings=[*managed, profile.id],
            signing_key=signing_key.id,
            access_token_validity=args.access_token_validity,
            refresh_token_validity=args.refresh_token_validity,
            # Roundcube takes the user's email from the id_token.
            include_claims_in_id_token=True,
            sub_mode="hashed_user_id",
            opts=child,
        )

        application = authentik.Application(
            f"{name}-application",
            name=args.app_name,
            slug=args.app_slug,
            # The provider's id is a string in state; the application wants the number.
            protocol_provider=provider.id.apply(float),
            meta_launch_url=args.launch_url,
            policy_engine_mode="any",
            opts=child,
        )

        if args.allowed_group is not None:
            group = authentik.get_group_output(name=args.allowed_group, include_users=False, opts=lookup)
            authentik.PolicyBinding(
                f"{name}-allowed-group",
                target=application.uuid,
                group=group.id,
                order=0,
                opts=child,
            )

        self.provider_id = provider.id
        self.application_slug = application.slug
        self.launch_url = application.meta_launch_url.apply(lambda url: url or "")
        self.register_outputs(
            {
                "provider_id": self.provider_id,
                "application_slug": self.application_slug,
                "launch_url": self.launch_url,
            }
        )

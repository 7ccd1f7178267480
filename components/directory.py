"""authentik's side of the mail directory: an account that may only read users and groups.

The directory sync (images/postfix/directory-sync.py, in its own container)
reads authentik's users and groups through the REST API with this account's
API token. Least privilege: a service account (it cannot log in
interactively), in a group that is not a superuser group, whose only role
grants viewing users and groups; the token has intent `api` and does not
expire, and its key is a Pulumi secret that reaches only the sync's
container, as a file.

Rotating the token: `pulumi up --replace '<urn of the directory-token>'`
(`pulumi stack --show-urns` lists it) creates a new token, uploads the new key
and deletes the old token; the sync reads the file every round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_authentik as authentik

# Django permission codenames (authentik/core/models.py: User and Group).
VIEW_PERMISSIONS = ("authentik_core.view_user", "authentik_core.view_group")


@dataclass
class DirectoryReaderArgs:
    app_name: pulumi.Input[str]
    app_slug: str


class DirectoryReader(pulumi.ComponentResource):
    """The service account, group, role, permissions and API token of the directory sync."""

    token_key: pulumi.Output[str]
    username: str

    def __init__(self, name: str, args: DirectoryReaderArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:DirectoryReader", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.username = f"{args.app_slug}-directory"

        account = authentik.User(
            f"{name}-account",
            username=self.username,
            name=pulumi.Output.concat(args.app_name, " directory sync"),
            type="service_account",
            opts=child,
        )
        role = authentik.RbacRole(f"{name}-role", name=pulumi.Output.concat(args.app_name, " directory reader"), opts=child)
        for permission in VIEW_PERMISSIONS:
            authentik.RbacPermissionRole(
                f"{name}-{permission.split('.')[1].replace('_', '-')}",
                role=role.id,
                permission=permission,
                opts=child,
            )
        # Roles reach users through groups; this one grants nothing else.
        authentik.Group(
            f"{name}-group",
            name=pulumi.Output.concat(args.app_name, " directory readers"),
            is_superuser=False,
            roles=[role.id],
            users=[account.id.apply(float)],
            opts=child,
        )
        token = authentik.Token(
            f"{name}-token",
            identifier=f"{args.app_slug}-directory-sync",
            user=account.id.apply(float),
            intent="api",
            # An API token that expires would stop the directory on a fixed day.
            expiring=False,
            retrieve_key=True,
            description="Read-only: the mail directory sync of roundcube-authentik",
            opts=child,
        )
        self.token_key = pulumi.Output.secret(token.key)
        self.register_outputs({"username": self.username})

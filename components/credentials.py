"""Generated credentials, in one place.

Each is a pulumi-random resource, so it is created once and then kept in the
stack's state (encrypted, since every result here is a secret). Changing a
setting never regenerates them; `pulumi up --replace <urn>` rotates one.
"""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_random as random


class Credentials(pulumi.ComponentResource):
    """The OAuth client id and secret shared by authentik, Roundcube and Dovecot, and Roundcube's DES key."""

    client_id: pulumi.Output[str]
    client_secret: pulumi.Output[str]
    des_key: pulumi.Output[str]

    database_password: Optional[pulumi.Output[str]]

    def __init__(self, name: str, database: bool = False, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("roundcube-authentik:index:Credentials", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # Alphanumeric only: the pair travels inside Dovecot's introspection URL
        # (user:password@) and in HTTP Basic, where other characters need escaping
        # that each hop might decode differently.
        client_id = random.RandomPassword(
            f"{name}-oauth-client-id", length=40, special=False, opts=child
        )
        client_secret = random.RandomPassword(
            f"{name}-oauth-client-secret", length=64, special=False, opts=child
        )
        # Roundcube encrypts the IMAP password in the session with this key; it
        # must be exactly 24 characters.
        des_key = random.RandomPassword(f"{name}-roundcube-des-key", length=24, special=False, opts=child)

        # Roundcube's PostgreSQL, when replicas share one (alphanumeric: it travels in a DSN).
        self.database_password = None
        if database:
            password = random.RandomPassword(f"{name}-roundcube-db-password", length=40, special=False, opts=child)
            self.database_password = pulumi.Output.secret(password.result)
        self.client_id = pulumi.Output.secret(client_id.result)
        self.client_secret = pulumi.Output.secret(client_secret.result)
        self.des_key = pulumi.Output.secret(des_key.result)
        self.register_outputs(
            {"client_id": self.client_id, "client_secret": self.client_secret, "des_key": self.des_key}
        )

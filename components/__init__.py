"""roundcube-authentik: the Pulumi components and the pure core they use."""

"""The OAuth scopes Roundcube asks authentik for, in one place.

authentik silently drops a requested scope that no mapping on the provider
grants, so the provider's mappings (components/identity.py) and Roundcube's
`oauth_scope` (components/render/roundcube.py) are both built from here.
No Pulumi import: the renderers use it too.
"""

# The project's own scope mapping: profile claims for the token's user.
DOVECOT_PROFILE_SCOPE = "dovecotprofile"

# Mappings authentik ships (managed "goauthentik.io/providers/oauth2/scope-<name>"):
# openid is required (without it there is no id_token and introspection reports
# the token inactive), email carries the identity Roundcube and Dovecot use,
# offline_access yields the refresh token that keeps a Roundcube session alive
# past the access token's lifetime.
MANAGED_SCOPES = ("openid", "email", "offline_access")

# What Roundcube requests: every scope the provider maps.
ROUNDCUBE_SCOPES = (*MANAGED_SCOPES, DOVECOT_PROFILE_SCOPE)

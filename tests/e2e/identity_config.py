"""The authentik stand-in's configuration, read off the program's declared authentik resources.

Nothing here is a second hand-written copy of the provider: client id and
secret, redirect URIs, scopes, the dovecotprofile expression, lifetimes, the
application and its group binding all come from the capture.
"""

from __future__ import annotations

from typing import Any

from offline.capture import Capture

PROVIDER = "authentik:index/providerOauth2:ProviderOauth2"
APPLICATION = "authentik:index/application:Application"
SCOPE_MAPPING = "authentik:index/propertyMappingProviderScope:PropertyMappingProviderScope"
BINDING = "authentik:index/policyBinding:PolicyBinding"


def _scopes_and_mappings(capture: Capture, mapping_ids: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    custom = {m.outputs["id"]: m for m in capture.of_type(SCOPE_MAPPING)}
    scopes, mappings = [], []
    for mapping_id in mapping_ids:
        if mapping_id.startswith("scope:"):  # a managed mapping, looked up by the program
            scopes.append(mapping_id.split(":", 1)[1])
        else:
            mapping = custom[mapping_id].inputs
            scopes.append(mapping["scopeName"])
            mappings.append(
                {"name": mapping["name"], "scope_name": mapping["scopeName"], "expression": mapping["expression"]}
            )
    return scopes, mappings


def _allowed_group(capture: Capture, application_uuid: str) -> str | None:
    groups = {f"group:{i.args['name']}": i.args["name"] for i in capture.invokes if i.token.endswith("getGroup")}
    bound = [b.inputs["group"] for b in capture.of_type(BINDING) if b.inputs["target"] == application_uuid]
    return groups[bound[0]] if bound else None


def application_from_capture(capture: Capture) -> tuple[dict[str, Any], list[dict[str, str]]]:
    provider = capture.one(PROVIDER).inputs
    application = capture.one(APPLICATION)
    scopes, mappings = _scopes_and_mappings(capture, provider["propertyMappings"])
    group = _allowed_group(capture, application.outputs["uuid"])
    app = {
        "name": application.inputs["name"],
        "slug": application.inputs["slug"],
        "launch_url": application.inputs.get("metaLaunchUrl"),
        "group": None,
        "provider": {
            "name": provider["name"],
            "client_id": provider["clientId"],
            "client_secret": provider["clientSecret"],
            "client_type": provider["clientType"],
            "allowed_redirect_uris": provider["allowedRedirectUris"],
            "scopes": scopes,
            "access_token_validity": provider.get("accessTokenValidity", "minutes=5"),
            "refresh_token_validity": provider.get("refreshTokenValidity", "days=30"),
            "include_claims_in_id_token": provider.get("includeClaimsInIdToken", True),
            "sub_mode": provider.get("subMode", "hashed_user_id"),
            "issuer_mode": provider.get("issuerMode", "per_provider"),
            "signing_key": bool(provider.get("signingKey")),
            "allowed_group": group,
        },
    }
    return app, mappings


USER = "authentik:index/user:User"
GROUP = "authentik:index/group:Group"
ROLE = "authentik:index/rbacRole:RbacRole"
PERMISSION = "authentik:index/rbacPermissionRole:RbacPermissionRole"
TOKEN = "authentik:index/token:Token"


def directory_reader_from_capture(capture: Capture) -> dict[str, list[dict[str, Any]]]:
    """The service account, its group, role and permissions and its API token, as declared (directory: authentik)."""
    accounts = {int(u.outputs["id"]): u.inputs for u in capture.of_type(USER)}
    roles = {r.outputs["id"]: r.inputs["name"] for r in capture.of_type(ROLE)}
    permissions: dict[str, list[str]] = {name: [] for name in roles.values()}
    for grant in capture.of_type(PERMISSION):
        permissions[roles[grant.inputs["role"]]].append(grant.inputs["permission"])
    groups = [g.inputs for g in capture.of_type(GROUP)]
    member_of = {pk: [g["name"] for g in groups if pk in g.get("users", [])] for pk in accounts}
    return {
        "users": [
            {"username": a["username"], "name": a.get("name", ""), "type": a.get("type", "internal"),
             # A service account has no password anyone knows.
             "password": "!service-account-" + a["username"], "groups": member_of[pk]}
            for pk, a in accounts.items()
        ],
        "groups": [{"name": g["name"], "is_superuser": g.get("isSuperuser", False),
                    "roles": [roles[r] for r in g.get("roles", [])]} for g in groups],
        "roles": [{"name": name, "permissions": sorted(permissions[name])} for name in roles.values()],
        "tokens": [
            {"identifier": t.inputs["identifier"], "key": t.outputs["key"], "user": accounts[int(t.inputs["user"])]["username"],
             "intent": t.inputs.get("intent", "api"), "expiring": t.inputs.get("expiring", True), "expires": None}
            for t in capture.of_type(TOKEN)
        ],
    }


def standin_config(
    capture: Capture,
    *,
    base_url: str,
    port: int,
    cert_file: str,
    key_file: str,
    users: list[dict[str, Any]],
    extra_applications: list[dict[str, Any]] = (),  # type: ignore[assignment]
    groups: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    app, mappings = application_from_capture(capture)
    reader = directory_reader_from_capture(capture)
    return {
        "base_url": base_url,
        "listen": {"host": "0.0.0.0", "port": port},
        "tls": {"cert_file": cert_file, "key_file": key_file},
        "users": [*users, *reader["users"]],
        "groups": [*groups, *reader["groups"]],
        "roles": reader["roles"],
        "tokens": reader["tokens"],
        "scope_mappings": mappings,
        "applications": [app, *extra_applications],
    }

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


def standin_config(
    capture: Capture,
    *,
    base_url: str,
    port: int,
    cert_file: str,
    key_file: str,
    users: list[dict[str, Any]],
    extra_applications: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    app, mappings = application_from_capture(capture)
    return {
        "base_url": base_url,
        "listen": {"host": "0.0.0.0", "port": port},
        "tls": {"cert_file": cert_file, "key_file": key_file},
        "users": users,
        "scope_mappings": mappings,
        "applications": [app, *extra_applications],
    }

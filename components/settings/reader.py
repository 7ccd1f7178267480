"""From what the Pulumi CLI hands a program to the settings model.

Values arrive as the CLI sends them (see offline/stack_file.py for the rules):
text, with maps and lists as JSON. This is the one place that turns them into
Python values; the models (components/settings/*) validate them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import ValidationError

from components.settings.common import SettingsError
from components.settings.stack import Settings


def load_settings(config: Mapping[str, Any], project: str) -> Settings:
    """Builds the settings from a stack's config (`project:key` -> value).

    Values arrive as the Pulumi CLI hands them to the program (see
    offline/stack_file.py for the rules): text, with maps and lists as JSON.
    The empty string means "not set", because that is what the CLI sends for
    a YAML null, and what `pulumi config set` writes back for one: an unset
    optional setting takes its default, an unset required one is reported.
    Keys of other namespaces (`authentik:`, `docker:`) belong to providers.
    """
    prefix = f"{project}:"
    raw: dict[str, Any] = {}
    for key, value in config.items():
        if key.startswith(prefix) and value != "":
            name = key[len(prefix):]
            raw[name] = _decode(name, value)
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise SettingsError(_explain(err, project)) from None


# What a required setting's "not set" error adds.
HINTS = {
    "directory": "mailboxes come from authentik (source: authentik, the default) and mail to postmaster@ and abuse@ "
    "(RFC 5321, RFC 2142) needs a mailbox, e.g. `directory: {postmaster: alice@example.com}`; or `directory: open` "
    "accepts every address of mail_domain, as before",
}

# Settings whose value is text: a stack value such as "123", "true" or "null" stays text.
_TEXT = {str, Optional[str], Optional[Path]}


def _decode(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    field = Settings.model_fields.get(name)
    if field is not None and field.annotation in _TEXT:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _explain(err: ValidationError, project: str) -> str:
    lines = []
    for error in err.errors():
        where = ".".join(str(part) for part in error["loc"])
        setting = f"{project}:{where}" if where else f"{project} settings"
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(Settings.model_fields)) if len(error["loc"]) == 1 else "see the README"
            lines.append(f"{setting}: unknown setting; allowed settings are: {allowed}")
        elif error["type"] == "missing":
            lines.append(f"{setting}: required, not set" + (f"; {HINTS[where]}" if where in HINTS else ""))
        else:
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{setting}: {message}")
    return "invalid stack settings:\n  " + "\n  ".join(lines)

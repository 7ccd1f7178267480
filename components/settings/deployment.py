"""Where the services run: containers on one Docker host, or a Docker Swarm."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from components.settings.common import Strict

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")


class SwarmSettings(Strict):
    """deployment: swarm. The mail services stay on one node (their volumes are
    local to it): the node an operator labels `<mail_node_label>=true`."""

    mail_node_label: str = Field("roundcube-authentik.mail", description="node label that marks the mail node")

    @field_validator("mail_node_label")
    @classmethod
    def _label(cls, value: str) -> str:
        if not _LABEL.match(value):
            raise ValueError(f"must be a node label key of lower-case letters, digits, '.', '_' or '-', got {value!r}")
        return value

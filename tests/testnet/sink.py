"""aiosmtpd handler of the test network's receiving SMTP server: every message
is kept byte for byte as it arrived (a DKIM signature verifies on exactly those
bytes), one file per message, with its envelope beside it."""

from __future__ import annotations

import json
import pathlib
import uuid
from typing import Any


class RawMaildir:
    def __init__(self, folder: str = "/srv/mail") -> None:
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_cli(cls, parser: Any, *args: str) -> "RawMaildir":
        return cls(*args)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = uuid.uuid4().hex
        (self.folder / f"{name}.json").write_text(
            json.dumps({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos, "peer": session.peer[0]})
        )
        (self.folder / f"{name}.eml").write_bytes(envelope.original_content)
        return "250 2.0.0 Ok: kept"

"""The program type-checks against the SDKs' own types.

No Pulumi engine or provider runs here to reject a misspelt argument
(`allowed_redirect_uri`, `networks_advanced=` as a dict...); mypy does.
"""

from __future__ import annotations

import subprocess
import sys

from offline.capture import PROJECT_DIR


def test_program_and_components_type_check_against_the_sdks() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(PROJECT_DIR / "mypy.ini")],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout

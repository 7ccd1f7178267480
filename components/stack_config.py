"""All of the stack's config, as the Pulumi runtime hands it to the program.

`pulumi.Config.get` answers one known key; rejecting unknown keys needs them
all. The language host passes them in PULUMI_CONFIG, and the runtime (or a
test's `set_all_config`) may hold them too; both are merged.
"""

from __future__ import annotations

from typing import Any

from pulumi.runtime import config as runtime_config


def stack_config() -> dict[str, Any]:
    merged = dict(runtime_config.get_config_env())
    merged.update(runtime_config.CONFIG.get())
    return merged

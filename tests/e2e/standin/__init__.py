"""An authentik stand-in for end-to-end tests.

A small HTTPS server that serves authentik's OAuth2/OpenID provider endpoints
for the applications, providers and scope mappings in a JSON config document.
Run it with ``python3 -m standin CONFIG.json`` (the folder's parent on
sys.path), or in-process with ``create_app``/``make_server``. Needs only the
standard library, Flask, PyJWT and cryptography (Debian trixie's packages do).
``client.py`` (a test-side helper using ``requests``) is not imported here.
"""

from .config import Config, ConfigError, load_config_file, parse_config, timedelta_from_string
from .server import create_app, make_server, serve

__all__ = [
    "Config",
    "ConfigError",
    "create_app",
    "load_config_file",
    "make_server",
    "parse_config",
    "serve",
    "timedelta_from_string",
]

"""``python3 -m standin CONFIG.json``: serve the authentik stand-in over HTTPS.

Exit status 2 for a bad config. SIGTERM (``docker stop``, also as PID 1)
stops the server cleanly.
"""

from __future__ import annotations

import signal
import sys

from .config import ConfigError, load_config_file
from .server import serve, stderr_log


class _Terminated(BaseException):
    """Raised by the SIGTERM handler to leave serve_forever()."""


def _stop(signum, frame):  # noqa: ARG001 - signal handler signature
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: python3 -m standin CONFIG.json", file=sys.stderr)
        return 2
    try:
        config = load_config_file(argv[0])
        if not config.cert_file or not config.key_file:
            raise ConfigError("config.tls: cert_file and key_file are required")
    except (OSError, ConfigError) as exc:
        stderr_log(f"cannot start: {exc}")
        return 2
    signal.signal(signal.SIGTERM, _stop)
    try:
        serve(config)
    except (KeyboardInterrupt, _Terminated):
        pass
    except OSError as exc:  # port in use, unreadable or bad TLS files
        stderr_log(f"cannot serve: {exc}")
        return 1
    stderr_log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each container may use: memory and processes."""

from __future__ import annotations

from pydantic import field_validator

from components.settings.common import Strict


class MemoryLimits(Strict):
    """Memory limit of each container in MiB (swap included: none beyond it)."""

    dovecot: int = 512
    postfix: int = 256
    roundcube: int = 512
    opendkim: int = 128
    directory: int = 256
    postgres: int = 256
    balancer: int = 64

    @field_validator("*")
    @classmethod
    def _size(cls, value: int) -> int:
        if not 64 <= value <= 65536:
            raise ValueError(f"must be a whole number of MiB between 64 and 65536, got {value}")
        return value


class ProcessLimits(Strict):
    """Most processes (threads included) each container may run at once: Docker's pids limit.

    Above what the daemons' own limits allow (Dovecot's and Postfix's
    default_process_limit of 100 per service, Apache's MaxRequestWorkers of
    150), so only a runaway is stopped.
    """

    dovecot: int = 1000
    postfix: int = 500
    roundcube: int = 500
    opendkim: int = 200
    directory: int = 100
    postgres: int = 200
    balancer: int = 100

    @field_validator("*")
    @classmethod
    def _count(cls, value: int) -> int:
        if not 32 <= value <= 65536:
            raise ValueError(f"must be a whole number of processes between 32 and 65536, got {value}")
        return value



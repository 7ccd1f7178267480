"""The stack's settings, split by concern; `load_settings` reads a stack's config into them."""

from components.settings.clients import ClientSettings
from components.settings.common import SettingsError, validity_seconds
from components.settings.directory import DirectorySettings
from components.settings.limits import MemoryLimits, ProcessLimits
from components.settings.network import Ports, PublishAddresses
from components.settings.reader import load_settings
from components.settings.stack import Settings
from components.settings.tls import TlsFiles

__all__ = [
    "ClientSettings",
    "DirectorySettings",
    "MemoryLimits",
    "Ports",
    "ProcessLimits",
    "PublishAddresses",
    "Settings",
    "SettingsError",
    "TlsFiles",
    "load_settings",
    "validity_seconds",
]

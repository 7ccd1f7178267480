"""Pure renderers: (settings, credentials) -> the text of one file a daemon reads.

No Pulumi import here: these run in unit tests, in the offline preview and
against the real daemons.
"""

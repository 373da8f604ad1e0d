"""Errors a user can act on.

Every error that reaches the CLI or the milter's start-up is one of these, so
the message printed is one clear line, never a traceback.
"""


class RegfdError(Exception):
    """Base class: an error with a message fit to show a user as is."""


class ConfigError(RegfdError):
    """The configuration (or a policy/lexicon file it names) is invalid."""


class InvalidInput(RegfdError):
    """A command's input was refused before anything was written."""


class StoreUnavailable(RegfdError):
    """The directory store (Redis) could not be reached or answered badly."""

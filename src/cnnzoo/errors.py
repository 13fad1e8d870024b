"""User-facing errors.

Anything a user can cause with bad input (a wrong model name, an image too small for a net, a corrupt
file, a bad checkpoint) raises a :class:`CnnzooError` with a one-line message that says what to do.
The CLI prints that line and exits with status 2; Python callers can catch the class.
"""

from __future__ import annotations


class CnnzooError(ValueError):
    """A problem with the user's input: the message is one line and says how to fix it."""


class UnknownModelError(CnnzooError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputSizeError(CnnzooError):
    """An input tensor whose shape the network cannot take (too small, wrong channel count)."""


class CnnzooWarning(UserWarning):
    """A choice that works but is likely not what the user wants (the CLI prints it as one line)."""

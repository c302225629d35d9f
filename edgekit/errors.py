"""The small error hierarchy edgekit speaks.

Every error a user can cause is an `EdgekitError` whose message is one line:
what was expected, what was given, what to do. The CLI prints that line and exits
non-zero; library callers catch the class they care about.
"""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class InputError(EdgekitError):
    """A file, folder, option or array the user gave is not what was expected."""

    exit_code = 2


class OutputExistsError(EdgekitError):
    """Refusing to overwrite an existing output without --force."""

    exit_code = 3


class ArtifactError(EdgekitError):
    """An artifact cannot be read or run: corrupt, truncated, unsupported."""

    exit_code = 4


class ConversionError(EdgekitError):
    """A converter rejected the model; the message names the cause and the likely fix."""

    exit_code = 5


class MissingDependencyError(EdgekitError):
    """An optional dependency (tensorflow, coremltools...) is not installed."""

    exit_code = 6


class IncompleteInstallError(MissingDependencyError):
    """A module of edgekit itself is missing: the installation is broken, not the user's model."""


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of a (library's multi-line) message, cut to `limit` characters."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""

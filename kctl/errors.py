"""How kctl reports failures: one line on stderr, exit code 1, never a traceback.

Server-side failures keep kubectl's shape, `Error from server (NotFound): pods
"x" not found`, using the ApiError's `reason`; problems found on the client
(bad flags, unreadable files, an unreachable server) read `error: ...`. This is
the one place that turns an exception into that line.
"""

from __future__ import annotations

import click
import yaml

from client.config import ConfigError
from proto.errors import ApiError


class CliError(Exception):
    """A problem kctl found itself, printed as `error: <message>`."""


def message(exc: BaseException, context: str = "") -> str:
    """The line to print for a failure.

    `context` says what was being done (`error when creating "web.yaml"`) and
    goes between the prefix and the detail, as in kubectl.
    """
    lead = f"{context}: " if context else ""
    if isinstance(exc, ApiError):
        return f"Error from server ({exc.reason}): {lead}{exc}"
    if isinstance(exc, click.UsageError):
        hint = f"\nSee '{exc.ctx.command_path} --help' for usage." if exc.ctx is not None else ""
        return f"error: {lead}{exc.format_message()}{hint}"
    if isinstance(exc, click.ClickException):
        return f"error: {lead}{exc.format_message()}"
    if isinstance(exc, CliError | ConfigError):
        return f"error: {lead}{exc}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"error: {lead}{where}{exc.strerror or exc}"
    if isinstance(exc, yaml.YAMLError):
        return f"error: {lead}{' '.join(str(exc).split())}"
    return f"error: {lead}{type(exc).__name__}: {exc}"


def report(exc: BaseException, context: str = "") -> None:
    click.echo(message(exc, context), err=True)

"""kctl: the kubectl of Flotilla. This module is the entry point and the error boundary.

`cli` is the root click group: the global flags (-s/--server, --kubeconfig,
--context, -n/--namespace, --token), the subcommands from kctl.commands, and the
`cluster` group from kctl.cluster. A further command family is one more
`cli.add_command(...)`.

`KctlGroup.main` is the single place failures become output: server errors
print `Error from server (Reason): ...`, client-side ones `error: ...`, both
as one line on stderr with exit code 1; Ctrl-C exits 130 quietly. Set
KCTL_DEBUG=1 to see the traceback of an unexpected error instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from kctl import context
from kctl.cluster import cluster
from kctl.commands import COMMANDS
from kctl.errors import report


class KctlGroup(click.Group):
    """The root group; its `main` maps every failure to one line and an exit code."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except (KeyboardInterrupt, click.Abort):
            code = 130
        except BrokenPipeError:
            code = _closed_stdout()
        except Exception as exc:
            if os.environ.get("KCTL_DEBUG"):
                raise
            report(exc)
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


def _closed_stdout() -> int:
    """`kctl get pods | head -1`: the reader left; stop quietly, as kubectl does."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: stdout is not a real file (tests)
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


@click.group(cls=KctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@context.global_options
def cli() -> None:
    """kctl controls a Flotilla cluster, as kubectl controls Kubernetes."""


for _command in (*COMMANDS, cluster):
    cli.add_command(_command)


def main() -> None:
    """The `kctl` console script."""
    cli.main(prog_name="kctl")


if __name__ == "__main__":
    main()

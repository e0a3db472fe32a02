"""`kctl logs` and `kctl exec`: reach into a pod's containers through the apiserver.

Both are forwarded by the apiserver to the kubelet of the pod's node
(controlplane/apiserver/proxy.py), so they work from anywhere the apiserver is
reachable. `exec` runs the command to completion (CRI ExecSync): its output is
printed, and kctl exits with the command's exit code, as kubectl does. With
-i (stdin) or -t (a terminal) it is a live session instead (kctl/terminal.py).
"""

from __future__ import annotations

import sys

import click

from client import Client
from kctl import context, terminal
from kctl.errors import CliError
from proto import kubelet_pb2


def _pod_name(arg: str) -> str:
    """POD, pod/POD or pods/POD."""
    kind, slash, name = arg.partition("/")
    if not slash:
        return arg
    if kind not in ("pod", "pods", "po"):
        raise CliError(f"only pods have logs and exec here, not {kind}")
    return name


@click.command("logs")
@click.argument("pod")
@click.argument("container", required=False, default="")
@click.option("-c", "--container", "container_opt", default="", help="The container (default: the only one).")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines until the container stops.")
@click.option("--tail", type=int, default=-1, help="Only the last N lines (-1: all).")
@click.option("-p", "--previous", is_flag=True, help="The log of the previous, terminated instance.")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
@context.global_options
def logs(pod: str, container: str, container_opt: str, follow: bool, tail: int, previous: bool,
         timestamps: bool) -> None:
    """Print the log of a container in a pod."""
    namespace = context.settings().current_namespace
    name = _pod_name(pod)

    async def body(client: Client) -> None:
        async for data in client.logs(namespace, name, container_opt or container, follow=follow,
                                      tail_lines=tail if tail >= 0 else None, previous=previous,
                                      timestamps=timestamps):
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    context.run(body)


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-c", "--container", default="", help="The container (default: the only one).")
@click.option("--timeout", type=int, default=0, help="Seconds the command may run (0: the kubelet's default).")
@click.option("-i", "--stdin", is_flag=True, help="Pass stdin to the command.")
@click.option("-t", "--tty", is_flag=True, help="Run the command on a terminal (with -i: an interactive shell).")
@context.global_options
def exec_(pod: str, command: tuple[str, ...], container: str, timeout: int, stdin: bool, tty: bool) -> int:
    """Run a command in a container: kctl exec POD [-c CONTAINER] [-it] -- COMMAND [ARGS...]."""
    namespace = context.settings().current_namespace
    name = _pod_name(pod)
    if tty and not sys.stdin.isatty():
        click.echo("Unable to use a TTY - input is not a terminal or the right kind of file", err=True)
        tty = False
    if stdin or tty:
        start = kubelet_pb2.ExecStart(namespace=namespace, pod=name, container=container, command=command,
                                      stdin=stdin, tty=tty)

        async def session(client: Client) -> int:
            done = await terminal.exec_interactive(client, start)
            if done.message:
                click.echo(f"error: {done.message}", err=True)
            elif done.exit_code:
                click.echo(f"command terminated with exit code {done.exit_code}", err=True)
            return done.exit_code

        return context.run(session)

    async def body(client: Client) -> int:
        reply = await client.exec(namespace, name, list(command), container, timeout=timeout)
        sys.stdout.buffer.write(reply.stdout)
        sys.stdout.buffer.flush()
        sys.stderr.buffer.write(reply.stderr)
        sys.stderr.buffer.flush()
        if reply.exit_code:
            click.echo(f"command terminated with exit code {reply.exit_code}", err=True)
        return reply.exit_code

    return context.run(body)

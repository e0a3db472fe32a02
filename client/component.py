"""One runner for every Flotilla daemon: Kubernetes' component-base and `app.NewXCommand`.

Each daemon (`flotilla-scheduler`, `-controller-manager`, `-dns`, `-lb-controller`,
`-proxy`, `-kubelet`, and the apiserver) declares a `Command`: its name, its own
flags and the failures it reports in one line. The `Command` adds the flags every
daemon shares and does, in one place, what each `main.py` used to do for itself:

- flags: `--server` and `--kubeconfig` (how to reach the apiserver), `--log-level`
  and `-v`, and, for a component that may stand by, `--leader-elect` with its
  three timings (names and defaults as kube-controller-manager's);
- logging: one format on stderr, which the supervisor (systemd, the local
  provider) collects;
- the connection: `client.config.for_component`, so a daemon uses its own
  kubeconfig or plaintext `--server`, never the user's `~/.kctl/config`;
- readiness: the body starts only once the apiserver answers (`wait_ready`);
- leader election: with `--leader-elect=true` the body runs only while this copy
  holds the component's Lease in kube-system; a copy that loses it exits non-zero
  so its supervisor restarts it as a standby, and a copy stopped by SIGTERM hands
  the Lease over at once;
- signals: SIGTERM and SIGINT cancel the body, which cleans up in its `finally`
  (asyncio's cancellation is this runner's `ctx.Done()`), and the process exits 0;
- failures: an expected error (a bad kubeconfig, an API error, whatever the
  daemon lists) ends the process with `NAME: message`, not a traceback;
- limits: the open-file limit is raised to its hard limit (a server holds one
  descriptor per connection, and a soft limit of 1024 let a flood of idle
  connections lock clients out), and accept() failing for want of descriptors
  is logged as one line now and then, not a traceback per attempt.

A daemon's main is then its flags and its body:

    COMMAND = Command("flotilla-scheduler", __doc__, flags=add_flags, errors=(ConfigError,))

    async def run(opts: argparse.Namespace, client: Client) -> None:
        await Scheduler(client, configuration.load(opts.config)).run()

    def main(argv: list[str] | None = None) -> None:
        COMMAND.main(run, argv)

A daemon that builds no client of its own from the flags (the apiserver serves
rather than calls; the kubelet first obtains its credentials by TLS bootstrap)
hands a body without a client to `run_standalone`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from client import config as clientconfig
from client.api import Client
from client.leaderelection import LeaderElectionConfig, LeaderElector
from proto import duration
from proto.errors import ApiError

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL")
READY_TIMEOUT = 30.0  # seconds a starting daemon waits for the apiserver before it gives up
RELEASE_TIMEOUT = 5.0  # seconds a stopping leader spends handing its Lease over

ACCEPT_ERROR_LOG_INTERVAL = 10.0  # seconds between lines about accept() failures

ClientBody = Callable[[argparse.Namespace, Client], Awaitable[None]]
StandaloneBody = Callable[[argparse.Namespace], Coroutine[Any, Any, None]]


class LeaderElectionLost(Exception):
    """This copy stopped renewing its Lease: another copy may be acting already, so it must stop."""


@dataclass(frozen=True)
class LeaderElection:
    """A component that may run as several copies, one acting: which Lease they contend for."""

    lease: str  # kube-system/<lease>
    enabled_by_default: bool = True


def parse_duration(text: str) -> float:
    """A duration flag ("40s", "5m", "1m30s", "250ms"; bare numbers are seconds), in seconds."""
    try:
        return duration.parse_duration(text)
    except duration.DurationError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def raise_open_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard one (systemd units set LimitNOFILE; a shell's 1024 is
    too few for a server); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20  # Linux refuses an infinite soft limit for files; this is the kernel's default nr_open
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


class _AcceptErrors:
    """The loop's exception handler: accept() failures (EMFILE under a flood) become one line per interval
    with a count, not asyncio's traceback per attempt; everything else goes to the default handler."""

    def __init__(self) -> None:
        self.last = 0.0
        self.suppressed = 0

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - self.last < ACCEPT_ERROR_LOG_INTERVAL:
            self.suppressed += 1
            return
        log.error("cannot accept connections: %s (%d more since the last report); open-file limit %d",
                  context.get("exception"), self.suppressed, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.last, self.suppressed = now, 0


async def until_stopped() -> None:
    """Wait until SIGTERM cancels the body: for a body whose work runs in tasks or servers it started."""
    await asyncio.Event().wait()


class Command:
    """A daemon's command line and lifecycle: flags, logging, client, leader election, signals."""

    def __init__(
        self,
        name: str,
        doc: str,
        *,
        flags: Callable[[argparse.ArgumentParser], None] | None = None,
        connects: bool = True,
        leader_election: LeaderElection | None = None,
        errors: tuple[type[Exception], ...] = (),
    ) -> None:
        """`name` is argv[0] and prefixes one-line failures; `doc` (the main module's docstring) gives
        --help its first line. `connects=False` leaves out --server/--kubeconfig (the apiserver).
        `errors` are the daemon's own expected failures, besides kubeconfig and API errors."""
        self.name = name
        self.description = doc.strip().split("\n")[0]
        self.add_flags = flags
        self.connects = connects
        self.leader_election = leader_election
        self.errors: tuple[type[Exception], ...] = (clientconfig.ConfigError, ApiError, LeaderElectionLost, *errors)

    # ------------------------------------------------------------------ flags

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=self.name, description=self.description)
        if self.connects:
            connection = parser.add_argument_group("apiserver connection")
            connection.add_argument("--server", help="the apiserver's HOST:PORT (plaintext without --kubeconfig; "
                                    "overrides the kubeconfig's server)")
            connection.add_argument("--kubeconfig", help="kubeconfig with the CA and this component's own "
                                    "credentials (TLS); the user's kctl config is never read")
        if self.leader_election is not None:
            election = parser.add_argument_group("leader election")
            default = "true" if self.leader_election.enabled_by_default else "false"
            election.add_argument("--leader-elect", default=default, choices=["true", "false"],
                                  help=f"hold the Lease kube-system/{self.leader_election.lease} before acting "
                                  "(a second copy stands by; default: %(default)s)")
            election.add_argument("--leader-elect-lease-duration", type=parse_duration, metavar="DURATION",
                                  default=15.0, help="how long a standby waits after the last renewal to take over")
            election.add_argument("--leader-elect-renew-deadline", type=parse_duration, metavar="DURATION",
                                  default=10.0, help="how long the leader keeps trying to renew before it stops")
            election.add_argument("--leader-elect-retry-period", type=parse_duration, metavar="DURATION",
                                  default=2.0, help="how often to try to acquire or renew")
        logs = parser.add_argument_group("logging")
        logs.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")
        logs.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG (as --log-level DEBUG)")
        if self.add_flags is not None:
            self.add_flags(parser)
        return parser

    def parse_args(self, argv: list[str] | None = None) -> argparse.Namespace:
        return self.parser().parse_args(argv)

    # ------------------------------------------------------------------ running

    def main(self, body: ClientBody, argv: list[str] | None = None) -> None:
        """Parse `argv` and `run` the body: the whole of a client daemon's `main`."""
        self.run(body, self.parse_args(argv))

    def run(self, body: ClientBody, opts: argparse.Namespace) -> None:
        """Run `body(opts, client)` against a ready apiserver (and only while leading, if elected)."""
        if not self.connects:
            raise TypeError(f"{self.name} takes no --server/--kubeconfig: use run_standalone")
        self.run_standalone(lambda o: self._connected(body, o), opts)

    def run_standalone(self, body: StandaloneBody, opts: argparse.Namespace) -> None:
        """Run `body(opts)` with logging, signal handling and one-line failures, but no client."""
        logging.basicConfig(level="DEBUG" if opts.verbose else opts.log_level, stream=sys.stderr,
                            format=LOG_FORMAT)
        raise_open_file_limit()
        try:
            asyncio.run(self._until_signalled(body(opts)))
        except Exception as err:
            message = self._explain(err)
            if message is None:
                raise  # not a failure we know: the traceback is the best report
            raise SystemExit(f"{self.name}: {message}") from None

    async def _until_signalled(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` until it ends or SIGTERM/SIGINT cancels it; a signalled stop is a clean exit."""
        task = asyncio.create_task(work, name=self.name)
        signalled: list[signal.Signals] = []

        def stop(sig: signal.Signals) -> None:
            if not signalled:
                log.info("%s: shutting down", sig.name)
            signalled.append(sig)
            task.cancel()

        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_AcceptErrors().handle)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop, sig)
        try:
            await task
        except asyncio.CancelledError:
            if not signalled:
                raise
            log.info("stopped")
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _connected(self, body: ClientBody, opts: argparse.Namespace) -> None:
        client_config = clientconfig.for_component(server=opts.server, kubeconfig=opts.kubeconfig)
        async with client_config.client() as client:
            # Readiness: nothing acts before the apiserver answers, and a daemon that cannot reach
            # it within the timeout exits (its supervisor retries) instead of hanging half-started.
            await client.wait_ready(timeout=READY_TIMEOUT)
            if self.leader_election is not None and opts.leader_elect == "true":
                await self._lead(body, opts, client, self.leader_election)
            else:
                await body(opts, client)

    async def _lead(self, body: ClientBody, opts: argparse.Namespace, client: Client,
                    election: LeaderElection) -> None:
        """Run the body only while holding the Lease; release the Lease however the body ends."""
        # Host, pid and a nonce: two copies on one host, or a restarted pid, never share an identity.
        identity = f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        elector = LeaderElector(client, LeaderElectionConfig(
            election.lease, identity, lease_duration=opts.leader_elect_lease_duration,
            renew_deadline=opts.leader_elect_renew_deadline, retry_period=opts.leader_elect_retry_period))
        leading: list[asyncio.Task[None]] = []

        async def lead() -> None:
            task = asyncio.current_task()
            assert task is not None
            leading.append(task)
            await body(opts, client)

        log.info("%s: waiting to lead %s/%s", identity, elector.config.namespace, election.lease)
        try:
            await elector.run(lead)
        finally:
            # The elector cancels the body without waiting for it: its clean-up must end while
            # the client is still open, and before a standby starts acting.
            if leading:
                await asyncio.wait(leading)
            with suppress(TimeoutError):
                await asyncio.wait_for(elector.release(), timeout=RELEASE_TIMEOUT)
        if leading and leading[0].cancelled():
            raise LeaderElectionLost("lost the leader lease")

    def _explain(self, err: Exception) -> str | None:
        """The one-line message for an expected failure (every leaf of a TaskGroup's); None otherwise."""
        leaves = list(_leaves(err))
        if not all(isinstance(leaf, self.errors) for leaf in leaves):
            return None
        return "; ".join(str(leaf) for leaf in leaves)


def _leaves(err: BaseException) -> Iterator[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        for inner in err.exceptions:
            yield from _leaves(inner)
    else:
        yield err

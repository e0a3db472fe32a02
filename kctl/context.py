"""The invocation's settings (server, kubeconfig, context, namespace, token) and running a command's body.

kubectl accepts its global flags anywhere (`kubectl get pods -n x` as well as
`kubectl -n x get pods`), so `global_options` puts the same flags on the root
group and on every command; whichever is given last wins. Commands are sync
click callbacks that hand an async body to `run`, which opens one Client,
runs the body under `asyncio.run`, and closes the channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click

from client import Client
from client import config as clientconfig
from controlplane.apiserver.validation.meta import is_dns1123_label
from kctl.errors import CliError
from proto.errors import Unavailable

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """Global flags as given (None = not given) and the config they resolve to."""

    server: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    token: str | None = None
    _config: clientconfig.ClientConfig | None = field(default=None, repr=False)

    def config(self) -> clientconfig.ClientConfig:
        if self._config is None:
            self._config = clientconfig.load(server=self.server, kubeconfig=self.kubeconfig, context=self.context,
                                             token=self.token, namespace=self.namespace)
        return self._config

    @property
    def current_namespace(self) -> str:
        """-n if given, else the context's namespace, else "default"; CliError if it cannot be a namespace.

        Checked here, before any request, so `-n 'Bad NS'` says what is wrong with it rather than
        finding nothing in a namespace that cannot exist.
        """
        if self.namespace:
            namespace = self.namespace
        else:
            try:
                namespace = self.config().namespace
            except clientconfig.ConfigError:
                namespace = clientconfig.DEFAULT_NAMESPACE
        problems = is_dns1123_label(namespace)
        if problems:
            raise CliError(f'invalid namespace "{namespace}": {"; ".join(problems)}')
        return namespace


def settings() -> Settings:
    """The settings of the running invocation."""
    return click.get_current_context().find_root().ensure_object(Settings)


def _store(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            setattr(ctx.find_root().ensure_object(Settings), attr, value)
        return value
    return callback


def global_options(f: F) -> F:
    """-s/--server, --kubeconfig, --context, -n/--namespace and --token, accepted on any command."""
    for decl, attr, help_text in reversed((
        (("-s", "--server"), "server", "The apiserver's HOST:PORT."),
        (("--kubeconfig",), "kubeconfig",
         "The kubeconfig file (default: $KCTL_CONFIG, else $KUBECONFIG, else ~/.kube/config, else ~/.kctl/config)."),
        (("--context",), "context", "The kubeconfig context to use (default: its current-context)."),
        (("-n", "--namespace"), "namespace", "The namespace for this request."),
        (("--token",), "token", "Bearer token for authentication to the apiserver."),
    )):
        f = click.option(*decl, attr, default=None, expose_value=False, callback=_store(attr),
                         help=help_text, metavar="TEXT")(f)
    return f


def run(body: Callable[[Client], Awaitable[T]]) -> T:
    """Run `body(client)` on a fresh event loop with a Client to the configured server."""
    config = settings().config()

    async def main() -> T:
        async with config.client() as client:
            try:
                return await body(client)
            except Unavailable as exc:
                if unreachable(exc):
                    raise CliError(f"the server at {config.server} is unreachable "
                                   "(is the apiserver running?)") from None
                raise

    return asyncio.run(main())


def unreachable(exc: Unavailable) -> bool:
    """A connection failure (as opposed to the apiserver answering 'unavailable')."""
    text = str(exc).lower()
    return any(s in text for s in ("failed to connect", "unreachable", "connection refused",
                                   "dns resolution failed", "socket closed", "connection reset"))

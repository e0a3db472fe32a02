"""The apiserver's service-account flags, and what it starts from them.

Kubernetes' names: `--service-account-signing-key-file` (PEM private key that signs),
`--service-account-key-file` (repeatable: PEM keys that verify; default the signing
key), `--service-account-issuer` (the `iss` claim), `--api-audiences` (what tokens
must be for; default the issuer), `--service-account-max-token-expiration`.

`start` loads the keys (a bad file stops the start with one line), then keeps the
authenticator's copies of ServiceAccounts and Pods current from the registry and
waits until both are filled, so no token is refused for want of a cache.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from controlplane.apiserver.registry import Registry
from controlplane.apiserver.serviceaccount.authenticator import ServiceAccountTokens
from controlplane.apiserver.serviceaccount.keys import (
    ServiceAccountKeyError,
    SigningKey,
    key_id,
    load_public_keys,
)
from controlplane.apiserver.serviceaccount.tokens import DEFAULT_ISSUER, TokenIssuer
from proto import kinds

log = logging.getLogger("apiserver.serviceaccount")


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--service-account-signing-key-file", default="",
                        help="PEM private key (RSA or P-256) that signs service-account tokens; without it the "
                             "apiserver makes a key of its own at start (its tokens die with it)")
    parser.add_argument("--service-account-key-file", action="append", default=[],
                        help="PEM file of keys that verify service-account tokens (repeatable; default: the "
                             "signing key)")
    parser.add_argument("--service-account-issuer", default=DEFAULT_ISSUER,
                        help="the iss claim of the tokens this apiserver signs and accepts")
    parser.add_argument("--api-audiences", default="", type=lambda v: [a for a in v.split(",") if a],
                        help="comma-separated audiences tokens must name (default: the issuer)")
    parser.add_argument("--service-account-max-token-expiration", type=int, default=0,
                        help="seconds: the longest token TokenRequest issues (0: no cap)")


def issuer_from(opts: argparse.Namespace) -> TokenIssuer:
    try:
        if opts.service_account_signing_key_file:
            key = SigningKey.load(Path(opts.service_account_signing_key_file))
        else:
            log.warning("no --service-account-signing-key-file: service-account tokens are signed with a key made "
                        "at start, which no other apiserver knows and a restart forgets")
            key = SigningKey.generate()
        public = [k for f in opts.service_account_key_file for k in load_public_keys(Path(f))]
    except ServiceAccountKeyError as exc:
        raise SystemExit(f"flotilla-apiserver: {exc}") from None
    if public and not any(key_id(k) == key.kid for k in public):
        public.append(key.public)  # the tokens it signs itself are always accepted
    return TokenIssuer(key, issuer=opts.service_account_issuer, audiences=opts.api_audiences, public_keys=public)


async def start(registry: Registry, opts: argparse.Namespace,
                background: list[asyncio.Task[None]]) -> ServiceAccountTokens:
    """The authenticator of service-account tokens, its caches filled."""
    tokens = ServiceAccountTokens(issuer_from(opts))
    synced = [asyncio.Event(), asyncio.Event()]
    background.append(asyncio.create_task(registry.mirror(
        kinds.resolve("serviceaccounts"), tokens.observe_account, tokens.forget_accounts, synced[0])))
    background.append(asyncio.create_task(registry.mirror(
        kinds.resolve("pods"), tokens.observe_pod, tokens.forget_pods, synced[1])))
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in synced)), 30)
    return tokens

"""ValidatingAdmissionWebhook: the validating webhooks, all at once, any of them able to refuse.

After every mutation (built-in, strategy, mutating webhooks) and beside the
built-in validating plugins, in Kubernetes' place: just before ResourceQuota,
so a write a webhook refuses is never counted. The matching webhooks are
called in parallel with the same AdmissionReview (each with its own uid), so a
write waits for the slowest of them, never their sum. If several refuse or
fail, the error reported is that of the first in calling order (configurations
by name, webhooks as listed), so the same write always gets the same answer.
A call that fails under failurePolicy Ignore lets the write through, logged and
marked in the audit record (`failed-open.validating.webhook.admission.k8s.io/
round_0_index_N`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from controlplane.apiserver.admission.interface import Request
from controlplane.apiserver.admission.webhook import generic, matching
from proto.errors import ApiError

NAME = "ValidatingAdmissionWebhook"


class ValidatingAdmissionWebhook(generic.Webhooks):
    """A validating plugin (interface.ValidationInterface)."""

    NAME = NAME
    CONFIGURATION = "validatingwebhookconfigurations"

    @asynccontextmanager
    async def validate(self, request: Request) -> AsyncIterator[None]:
        attrs = await self.attributes(request)
        hooks = await self.invocations(attrs) if attrs is not None else []
        if attrs is not None and hooks:
            verdicts = await asyncio.gather(*(self._ask(hook, attrs, request) for hook in hooks))
            refusal = next((v for v in verdicts if v is not None), None)
            if refusal is not None:
                raise refusal
        yield

    async def _ask(self, hook: generic.Hook, attrs: matching.Attributes, request: Request) -> ApiError | None:
        """One webhook's verdict: None to let the write through, else the error to refuse it with."""
        try:
            response = await self.call(hook, attrs, request)
        except generic.CallFailed as failure:
            if hook.fails_open:
                self.failed_open(hook, failure, "validating")
                return None
            return generic.internal_error(failure)
        except ApiError as err:
            return err
        return None if response.allowed else generic.Denied(hook.name, response.status)

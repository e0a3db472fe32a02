"""API errors: one exception type per failure kind, shared by server, client and CLI.

The apiserver raises these; its gRPC layer turns each into its status code once
(`ApiError.code`), and the client turns a status code back into the same type
(`from_rpc_error`), so every component catches `NotFound` or `Conflict`, never a
raw `grpc.RpcError`. The CLI prints `str(error)` on one line.
"""

from __future__ import annotations

import grpc


class ApiError(Exception):
    """Base of every API failure; `code` is the gRPC status it travels as."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    # Kubernetes' HTTP-style reason, for messages and `kctl` output.
    reason: str = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadRequest(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "BadRequest"


class Invalid(BadRequest):
    """A write failed validation; `causes` holds (field path, what is wrong) pairs."""

    reason = "Invalid"

    def __init__(self, what: str, causes: list[tuple[str, str]]) -> None:
        self.what = what
        self.causes = causes
        detail = "; ".join(f"{path}: {msg}" if path else msg for path, msg in causes)
        super().__init__(f"{what} is invalid: {detail}")


class UnsupportedMediaType(BadRequest):
    """The body is in a format this endpoint does not read (HTTP 415), e.g. an unknown patch type."""

    reason = "UnsupportedMediaType"


class NotFound(ApiError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NotFound"


class AlreadyExists(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "AlreadyExists"


class Conflict(ApiError):
    """Optimistic concurrency failed: the object changed since it was read."""

    code = grpc.StatusCode.ABORTED
    reason = "Conflict"


class Gone(ApiError):
    """The requested resourceVersion was compacted away: relist and watch again."""

    code = grpc.StatusCode.OUT_OF_RANGE
    reason = "Expired"


class NamespaceTerminating(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "NamespaceTerminating"


class TooLarge(ApiError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RequestEntityTooLarge"


class TooManyRequests(ApiError):
    """Try again later (HTTP 429): an eviction its pod's disruption budget does not allow now.

    `causes` are (type, message) pairs, Kubernetes' StatusCauses: an eviction names the
    budget as a `DisruptionBudget` cause. kubectl drain retries after a pause.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "TooManyRequests"

    def __init__(self, message: str, causes: list[tuple[str, str]] | None = None,
                 retry_after_seconds: int = 0) -> None:
        super().__init__(message)
        self.causes = causes or []
        self.retry_after_seconds = retry_after_seconds


class Unauthorized(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "Unauthorized"


class Forbidden(ApiError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "Forbidden"


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "ServiceUnavailable"


class Timeout(ApiError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "Timeout"


_KNOWN = (BadRequest, Invalid, UnsupportedMediaType, NotFound, AlreadyExists, Conflict, Gone, NamespaceTerminating,
          TooLarge, TooManyRequests, Unauthorized, Forbidden, Unavailable, Timeout)
_BY_CODE: dict[grpc.StatusCode, type[ApiError]] = {cls.code: cls for cls in _KNOWN
                                                   if cls not in (Invalid, UnsupportedMediaType, TooManyRequests)}
_BY_REASON: dict[str, type[ApiError]] = {cls.reason: cls for cls in _KNOWN}
# Several reasons share a status code (Invalid, UnsupportedMediaType and BadRequest are
# all INVALID_ARGUMENT; TooLarge and TooManyRequests are RESOURCE_EXHAUSTED); the reason
# travels beside the status in trailing metadata.
REASON_METADATA_KEY = "flotilla-reason"


def from_rpc_error(err: grpc.RpcError) -> ApiError:
    """The ApiError a failed call stands for (the server's message kept verbatim)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    reason = dict(trailers or ()).get(REASON_METADATA_KEY, "")
    cls = _BY_REASON.get(str(reason)) or _BY_CODE.get(code, ApiError)
    if cls is Unavailable and not details:
        details = "the apiserver is unreachable"
    error = ApiError.__new__(cls)
    ApiError.__init__(error, details or code.name)
    if isinstance(error, Invalid):
        error.what, error.causes = "", []
    elif isinstance(error, TooManyRequests):
        error.causes, error.retry_after_seconds = [], 0
    return error

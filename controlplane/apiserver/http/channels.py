"""The channel protocols of exec, attach and the Python client's port-forward over WebSocket.

Kubernetes multiplexes a command's streams over one WebSocket by putting a
channel number in front of every message. The subprotocol the client asks for
(`Sec-WebSocket-Protocol`) says which rules apply:

    channel.k8s.io            binary; channels 0 stdin, 1 stdout, 2 stderr, 3 error (text)
    base64.channel.k8s.io     the same as text messages: channel as an ASCII digit, then base64
    v4.channel.k8s.io         + channel 4 resize ({"Width", "Height"}); the error channel
                              carries a metav1.Status (the Python client; `kubernetes.stream`)
    v4.base64.channel.k8s.io  v4 as text messages
    v5.channel.k8s.io         + a message [255, ch] closes channel ch: kubectl 1.30+ sends
                              [255, 0] at the end of its stdin

The status a command ends with is a Status: Success, or Failure with reason
`NonZeroExitCode` and the code as the `ExitCode` cause, which kubectl exits with.

Port-forward over channels (`v4.channel.k8s.io`, the Python client): the i-th
port in the `ports` query parameter gets channel 2i for data and 2i+1 for
errors; the first message on each carries the port, 2 bytes little-endian.

Also here, for all the stream handlers: boolean query parameters read as
Kubernetes reads them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from proto.errors import BadRequest

STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
CLOSE = 255  # v5: [CLOSE, channel] ends that channel


class ProtocolError(Exception):
    """A message that does not follow the negotiated channel protocol."""


@dataclass(frozen=True)
class ChannelProtocol:
    name: str
    base64: bool  # text messages: channel as an ASCII digit, payload base64
    status_json: bool  # the error channel carries a metav1.Status rather than text
    resize: bool  # channel 4 carries terminal sizes
    close: bool  # [255, ch] closes a channel

    def encode(self, channel: int, data: bytes) -> bytes | str:
        """One message carrying `data` on `channel`."""
        if self.base64:
            return str(channel) + base64.b64encode(data).decode()
        return bytes([channel]) + data

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        """(channel, payload) of one message; (CLOSE, [ch]) for a v5 close."""
        if self.base64:
            text = message.decode() if isinstance(message, bytes) else message
            if not text or not text[0].isdigit():
                raise ProtocolError("a base64 channel message must begin with its channel digit")
            try:
                return int(text[0]), base64.b64decode(text[1:], validate=True)
            except (binascii.Error, ValueError) as err:
                raise ProtocolError(f"bad base64 payload: {err}") from None
        data = message.encode() if isinstance(message, str) else message
        if not data:
            raise ProtocolError("an empty message has no channel")
        if data[0] == CLOSE:
            if not self.close or len(data) != 2:
                raise ProtocolError("a close message is [255, channel] and only in v5.channel.k8s.io")
        return data[0], data[1:]


PROTOCOLS: dict[str, ChannelProtocol] = {p.name: p for p in (
    ChannelProtocol("v5.channel.k8s.io", base64=False, status_json=True, resize=True, close=True),
    ChannelProtocol("v4.channel.k8s.io", base64=False, status_json=True, resize=True, close=False),
    ChannelProtocol("v4.base64.channel.k8s.io", base64=True, status_json=True, resize=True, close=False),
    ChannelProtocol("v3.channel.k8s.io", base64=False, status_json=False, resize=True, close=False),
    ChannelProtocol("v2.channel.k8s.io", base64=False, status_json=False, resize=False, close=False),
    ChannelProtocol("channel.k8s.io", base64=False, status_json=False, resize=False, close=False),
    ChannelProtocol("base64.channel.k8s.io", base64=True, status_json=False, resize=False, close=False),
)}
# A client that names no subprotocol gets the oldest binary one, as Kubernetes does.
DEFAULT = PROTOCOLS["channel.k8s.io"]


def success_status() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_status(exit_code: int, command: list[str], message: str = "") -> dict[str, Any]:
    """The Status a finished command reports on the error channel."""
    if exit_code == 0 and not message:
        return success_status()
    if message:  # it could not run, or the runtime broke off: no exit code to give
        return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
                "code": 500, "details": {"causes": [{"message": message}]}}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(command)}], exit code {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}}


def status_payload(protocol: ChannelProtocol, status: dict[str, Any]) -> bytes:
    """What the error channel carries: the Status itself (v4+), else its message as text."""
    if protocol.status_json:
        return json.dumps(status, separators=(",", ":")).encode()
    return str(status.get("message", "")).encode()


def terminal_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a resize message's JSON."""
    try:
        size = json.loads(data)
        width, height = int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError) as err:
        raise ProtocolError(f'a resize is {{"Width": columns, "Height": rows}}: {err}') from None
    if not (0 <= width < 65536 and 0 <= height < 65536):
        raise ProtocolError(f"terminal size {width}x{height} out of range")
    return width, height


def port_prefix(port: int) -> bytes:
    """The first message's payload on a port-forward channel: the port, 2 bytes little-endian."""
    return port.to_bytes(2, "little")


def parse_bool(query: MultiMapping[str], name: str, default: bool = False) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (Kubernetes' conversion)."""
    value = query.get(name)
    if value is None or value == "":
        return default
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise BadRequest(f'invalid value for query parameter "{name}": {value!r} is not a boolean')

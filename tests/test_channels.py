"""The stream codecs without a cluster: WebSocket channel protocols, SPDY/3.1 frames and sessions, log options.

These are the byte-level rules kubectl 1.32, the Python client and containerd
hold us to: a channel byte per message (base64 digits in the text variants),
v5's [255, ch] close, the Status that carries an exit code, SPDY frames with
zlib-compressed header blocks sharing one compression context per direction,
and the session duties a SPDY server has (reply to each stream, echo PINGs).
"""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from datetime import UTC, datetime

import pytest
from multidict import MultiDict

from client import spdy
from controlplane.apiserver.http.channels import (
    CLOSE,
    PROTOCOLS,
    ProtocolError,
    exit_status,
    parse_bool,
    port_prefix,
    status_payload,
    terminal_size,
)
from controlplane.apiserver.http.exec import ExecOptions
from controlplane.apiserver.http.logs import log_request
from controlplane.apiserver.http.portforward import parse_ports
from controlplane.apiserver.http.spdy import SpdyServerSession
from nodeagent.kubelet.server import ByteLimit, CRILogParser, record_time
from nodeagent.kubelet.streaming import exit_of
from proto.errors import BadRequest, Invalid

# ---------------------------------------------------------------------------------------------- channels


@pytest.mark.parametrize("name", ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"])
def test_binary_channel_messages_round_trip(name: str) -> None:
    protocol = PROTOCOLS[name]
    message = protocol.encode(1, b"\x00hello\xff")
    assert message == b"\x01\x00hello\xff"
    assert protocol.decode(message) == (1, b"\x00hello\xff")


def test_base64_channel_messages_are_text_with_a_digit() -> None:
    protocol = PROTOCOLS["v4.base64.channel.k8s.io"]
    message = protocol.encode(2, b"oops\n")
    assert message == "2b29wcwo="
    assert protocol.decode(message) == (2, b"oops\n")
    with pytest.raises(ProtocolError):
        protocol.decode("x2b29wcwo=")
    with pytest.raises(ProtocolError):
        protocol.decode("0***")


def test_only_v5_closes_a_channel() -> None:
    assert PROTOCOLS["v5.channel.k8s.io"].decode(b"\xff\x00") == (CLOSE, b"\x00")
    with pytest.raises(ProtocolError, match="v5"):
        PROTOCOLS["v4.channel.k8s.io"].decode(b"\xff\x00")
    with pytest.raises(ProtocolError):
        PROTOCOLS["v5.channel.k8s.io"].decode(b"\xff\x00\x01")
    with pytest.raises(ProtocolError, match="empty"):
        PROTOCOLS["v5.channel.k8s.io"].decode(b"")


def test_the_exit_status_carries_the_code_kubectl_exits_with() -> None:
    status = exit_status(3, ["sh", "-c", "exit 3"])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert "exit code 3" in status["message"]
    assert exit_status(0, ["true"]) == {"metadata": {}, "status": "Success"}
    broken = exit_status(1, ["x"], "container not running")
    assert (broken["reason"], broken["message"]) == ("InternalError", "container not running")
    # v4+ put the Status itself on the error channel, older protocols only its message.
    assert json.loads(status_payload(PROTOCOLS["v5.channel.k8s.io"], status)) == status
    assert status_payload(PROTOCOLS["channel.k8s.io"], broken) == b"container not running"
    # The kubelet reads containerd's Status the same way back.
    assert exit_of(json.dumps(status).encode()).exit_code == 3
    assert exit_of(b"").exit_code == 0


def test_terminal_sizes() -> None:
    assert terminal_size(b'{"Width":120,"Height":50}') == (120, 50)
    for bad in (b"{}", b"not json", b'{"Width":-1,"Height":5}', b'{"Width":"a","Height":1}'):
        with pytest.raises(ProtocolError):
            terminal_size(bad)


def test_port_forward_channels_begin_with_the_port_little_endian() -> None:
    assert port_prefix(8080) == b"\x90\x1f"
    assert parse_ports(["80,8080", "9090"]) == [80, 8080, 9090]
    for bad in (["0"], ["65536"], ["http"]):
        with pytest.raises(BadRequest):
            parse_ports(bad)


def test_exec_options_as_kubernetes_reads_them() -> None:
    query = MultiDict([("command", "sh"), ("command", "-c"), ("command", "ls /"), ("stdout", "true"),
                       ("stderr", "True"), ("tty", "1"), ("container", "app")])
    options = ExecOptions.parse(query, "exec")
    assert options.command == ["sh", "-c", "ls /"]
    assert (options.stdout, options.stderr, options.tty, options.container) == (True, False, True, "app")
    with pytest.raises(BadRequest, match="at least one command"):
        ExecOptions.parse(MultiDict(stdout="true"), "exec")
    with pytest.raises(BadRequest, match="stdin, stdout, stderr"):
        ExecOptions.parse(MultiDict(command="ls", stdout="false", stderr="false"), "exec")
    assert ExecOptions.parse(MultiDict(), "attach").stdout  # attach defaults to the output streams
    with pytest.raises(BadRequest, match="not a boolean"):
        parse_bool(MultiDict(stdin="yes"), "stdin")


def test_log_options_are_validated_before_anything_streams() -> None:
    request = log_request(MultiDict(container="c", follow="true", tailLines="5", limitBytes="100"), "ns", "p")
    assert (request.container, request.follow, request.tail_lines, request.limit_bytes) == ("c", True, 5, 100)
    assert not request.HasField("since_seconds")
    with pytest.raises(Invalid) as invalid:
        log_request(MultiDict(sinceSeconds="0", tailLines="-1"), "ns", "p")
    assert [field for field, _ in invalid.value.causes] == ["tailLines", "sinceSeconds"]
    assert str(invalid.value).startswith('PodLogOptions "p" is invalid')
    with pytest.raises(Invalid, match="at most one"):
        log_request(MultiDict(sinceSeconds="5", sinceTime="2026-01-01T00:00:00Z"), "ns", "p")
    with pytest.raises(BadRequest, match="sinceTime"):
        log_request(MultiDict(sinceTime="yesterday"), "ns", "p")


# ---------------------------------------------------------------------------------------------- kubelet logs


def test_cri_log_records_since_a_time_and_within_a_byte_limit() -> None:
    records = (b"2026-01-01T00:00:01.123456789Z stdout F old\n"
               b"2026-01-01T00:00:05.000000001Z stdout P new \n"
               b"2026-01-01T00:00:06Z stderr F line\n")
    since = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    assert CRILogParser(since=since).feed(records) == [b"new line\n"]
    assert record_time(b"2026-01-01T02:00:00.5+02:00") == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    limit = ByteLimit(5)
    assert (limit.take(b"abc"), limit.take(b"defg"), limit.spent) == (b"abc", b"de", True)
    assert ByteLimit(None).take(b"all") == b"all"


# ---------------------------------------------------------------------------------------------- SPDY


def test_the_header_dictionary_is_spdy3s() -> None:
    # kubectl's zlib streams name this dictionary by its Adler-32 (DICTID); 1423 bytes in the spec.
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options") and spdy.DICTIONARY.endswith(b"enq=0.")


def test_every_frame_round_trips() -> None:
    writer, reader = spdy.FrameWriter(), spdy.FrameReader()
    frames: list[spdy.Frame] = [
        spdy.SynStream(1, {"streamtype": ["data"], "port": ["80"], "requestid": ["0"]}, spdy.FLAG_FIN, 0, 3),
        spdy.SynReply(1, {"x-multi": ["a", "b"]}),
        spdy.HeadersFrame(1, {"k": ["v"]}),
        spdy.DataFrame(1, b"payload" * 1000, spdy.FLAG_FIN),
        spdy.DataFrame(3, b""),
        spdy.RstStream(5, spdy.CANCEL),
        spdy.Settings([(0, 4, 100), (1, 7, 65536)]),
        spdy.Ping(7),
        spdy.GoAway(9, 0),
        spdy.WindowUpdate(1, 4096),
    ]
    wire = b"".join(writer.encode(frame) for frame in frames)
    # Fed a byte at a time, as a WebSocket may split frames anywhere.
    got = [frame for i in range(len(wire)) for frame in reader.feed(wire[i:i + 1])]
    assert got == frames


def test_header_blocks_share_one_compression_context() -> None:
    writer = spdy.FrameWriter()
    first = writer.encode(spdy.SynStream(1, {"streamtype": ["error"], "port": ["80"]}))
    second = writer.encode(spdy.SynStream(3, {"streamtype": ["error"], "port": ["80"]}))
    assert len(second) < len(first)  # the second block refers back into the first
    # The first block is a zlib stream that names the dictionary (FDICT) by its Adler-32.
    block = first[8 + 10:]
    assert block[1] & 0x20 and struct.unpack(">I", block[2:6])[0] == zlib.adler32(spdy.DICTIONARY)
    with pytest.raises(spdy.SpdyError, match="inflate"):
        spdy.FrameReader().feed(second)  # without the first, the second cannot inflate


def test_bad_frames_are_errors() -> None:
    wrong_version = struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1"
    with pytest.raises(spdy.SpdyError, match="version 2"):
        spdy.FrameReader().feed(wrong_version)
    short = struct.pack(">HHI", 0x8003, spdy.RST_STREAM, 2) + b"\0\1"
    with pytest.raises(spdy.SpdyError, match="short"):
        spdy.FrameReader().feed(short)
    unknown = struct.pack(">HHI", 0x8003, 99, 0)
    assert spdy.FrameReader().feed(unknown) == []  # ignored, as the specification asks


async def test_a_server_session_replies_echoes_and_routes() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    session, client = SpdyServerSession(send), spdy.FrameWriter()
    opened = await session.feed(client.encode(spdy.SynStream(1, {"streamtype": ["data"]}))
                                + client.encode(spdy.DataFrame(1, b"abc"))
                                + client.encode(spdy.DataFrame(1, b"", spdy.FLAG_FIN))
                                + client.encode(spdy.Ping(11)))
    assert [s.stream_id for s in opened] == [1]
    stream = opened[0]
    assert [stream.incoming.get_nowait(), stream.incoming.get_nowait()] == [b"abc", None]
    await session.write(stream, b"answer", fin=True)
    await session.write(stream, b"ignored after FIN")
    reader = spdy.FrameReader()
    got = [frame for data in sent for frame in reader.feed(data)]
    assert got == [spdy.SynReply(1), spdy.Ping(11), spdy.DataFrame(1, b"answer", spdy.FLAG_FIN)]
    assert session.streams == {}  # both sides closed: forgotten
    # A stream id the client may not use (even) is refused.
    await session.feed(client.encode(spdy.SynStream(2, {})))
    assert isinstance(reader.feed(sent[-1])[0], spdy.RstStream)
    await asyncio.sleep(0)

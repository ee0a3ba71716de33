"""ComfyUI's WebSocket: a reconnectable connection and the tracker of one job's events.

Why a tracker and not "wait for execution_success": execution_success arrives *before* the
server writes /history (7 of 15 fetches on it returned {} against a real server), so the done
signal is `executing` with `node: null` and our prompt_id. Every other client's events arrive on
the same socket too, so everything is filtered by prompt_id, unknown types are ignored and
optional fields (display_node, timestamp, even prompt_id) may be missing.

Binary frames: 4-byte big-endian event type; type 1 = [1][format][image], type 4 =
[4][uint32 n][n bytes JSON metadata][image]. KSampler previews are type-1 frames as well, so an
image counts as a result only while our SaveImageWebsocket output node is the one executing.
"""

from __future__ import annotations

import json
import struct
import threading
from urllib.parse import urlsplit

import websocket

from backend.comfyui.errors import ComfyError, ComfyUnavailable, Interrupted, execution_error
from backend.comfyui.text import safe_line

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4


class Disconnected(Exception):
    """The socket closed or broke; the caller reconnects with the same clientId."""


class EventSocket:
    """websocket-client connection to /ws?clientId=...; no message-size cap (keep it that way)."""

    def __init__(self, base_url: str, client_id: str, connect_timeout: float):
        parts = urlsplit(base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        self.url = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ws?clientId={client_id}"
        self._ws = websocket.WebSocket()
        try:
            # suppress_origin: ComfyUI answers 403 to an Origin that does not match Host
            self._ws.connect(self.url, timeout=connect_timeout, suppress_origin=True)
        except (OSError, websocket.WebSocketException) as exc:
            raise ComfyUnavailable(f"cannot open ComfyUI's WebSocket at {self.url}: {safe_line(exc)}") from exc

    def recv(self, timeout: float) -> str | bytes | None:
        """One message, or None when nothing arrived within `timeout` seconds."""
        self._ws.settimeout(max(timeout, 0.001))
        try:
            opcode, data = self._ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (OSError, websocket.WebSocketException) as exc:
            raise Disconnected(str(exc)) from exc
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return data.decode("utf-8", errors="replace")
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return bytes(data)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            raise Disconnected("server closed the WebSocket")
        return None

    def send_json(self, message: dict) -> None:
        try:
            self._ws.send(json.dumps(message))
        except (OSError, websocket.WebSocketException) as exc:
            raise Disconnected(str(exc)) from exc

    def close(self) -> None:
        try:
            self._ws.close(timeout=0.5)
        except (OSError, websocket.WebSocketException):
            pass


class EventStream:
    """Our clientId's WebSocket, reconnectable: `ensure()` connects when not connected, a broken
    socket is dropped by `recv`, so the next `ensure()` reconnects under the same clientId (which
    resumes delivery of a running prompt's events)."""

    def __init__(self, base_url: str, client_id: str, connect_timeout: float):
        self.base_url, self.client_id, self.connect_timeout = base_url, client_id, connect_timeout
        self._socket: EventSocket | None = None
        self._reconnect = threading.Event()

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def request_reconnect(self) -> None:
        """From any thread: the socket is dropped by the thread that uses it, at its next recv()
        or ensure() (a socket closed under a recv in progress would break it mid-frame). Used
        after the PC slept: a socket that looks open may be dead without ever saying so."""
        self._reconnect.set()

    def ensure(self) -> None:
        """Connect unless connected; ComfyUnavailable when the server does not accept."""
        if self._reconnect.is_set():
            self._reconnect.clear()
            self.drop()
        if self._socket is None:
            self._socket = EventSocket(self.base_url, self.client_id, self.connect_timeout)

    def recv(self, timeout: float) -> str | bytes | None:
        """One message or None (nothing within `timeout` s, or not connected); Disconnected when
        the socket broke or a reconnect was requested (it is dropped: the next ensure() reconnects)."""
        if self._reconnect.is_set() and self._socket is not None:
            self._reconnect.clear()
            self.drop()
            raise Disconnected("a reconnect was requested")
        if self._socket is None:
            return None
        try:
            return self._socket.recv(timeout)
        except Disconnected:
            self.drop()
            raise

    def drain(self) -> None:
        """Throw away what arrived while idle (other prompts' and stale events) and notice a socket
        that died meanwhile (ComfyUI restarted between jobs), so a new job's events are not missed."""
        try:
            for _ in range(100000):
                if self.recv(0.001) is None:
                    break
        except Disconnected:
            pass

    def drop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class JobTracker:
    """Follows one prompt through the event stream; `done`, `error`, images it saw."""

    def __init__(self, prompt_id: str, ws_output_nodes: set[str]):
        self.prompt_id = prompt_id
        self.ws_output_nodes = ws_output_nodes      # SaveImageWebsocket node ids we take frames from
        self.current_node: str | None = None
        self.done = False
        self.error: ComfyError | None = None
        self.ws_images: list[bytes] = []
        self.executed: dict[str, list] = {}        # node id -> [{"filename", "subfolder", "type"}]
        self.socket_dropped = False                 # the socket broke while this job ran

    def feed(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._binary(message)
            return
        try:
            msg = json.loads(message)
        except ValueError:
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("data"), dict):
            return
        kind, data = msg.get("type"), msg["data"]
        pid = data.get("prompt_id")
        if kind == "executing":
            node = data.get("node")
            if pid is None and node is not None:
                self.current_node = str(node)    # after a reconnect the server omits prompt_id
            elif pid == self.prompt_id:
                self.current_node = None if node is None else str(node)
                self.done = self.done or node is None
        elif pid != self.prompt_id:
            return
        elif kind == "executed":
            output = data.get("output") if isinstance(data.get("output"), dict) else {}
            images = output.get("images")
            if isinstance(images, list) and data.get("node") is not None:
                self.executed[str(data["node"])] = images
        elif kind == "execution_error":
            self.error = execution_error(data)     # done comes with `executing null`, after history
        elif kind == "execution_interrupted":
            self.error = Interrupted(f"ComfyUI interrupted prompt {self.prompt_id} at node "
                                     f"{safe_line(data.get('node_id'))} ({safe_line(data.get('node_type'))})")

    def _binary(self, frame: bytes) -> None:
        if len(frame) < 8:
            return
        event = struct.unpack(">I", frame[:4])[0]
        if event == PREVIEW_IMAGE:
            if self.current_node is not None and self.current_node in self.ws_output_nodes:
                self.ws_images.append(frame[8:])
        elif event == PREVIEW_IMAGE_WITH_METADATA:
            size = struct.unpack(">I", frame[4:8])[0]
            try:
                meta = json.loads(frame[8:8 + size])
            except ValueError:
                return
            node = str(meta.get("node_id", self.current_node)) if isinstance(meta, dict) else None
            pid = meta.get("prompt_id", self.prompt_id) if isinstance(meta, dict) else None
            if pid == self.prompt_id and node in self.ws_output_nodes and node == self.current_node:
                self.ws_images.append(frame[8 + size:])

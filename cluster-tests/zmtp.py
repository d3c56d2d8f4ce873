"""A minimal ZeroMQ PUB socket (ZMTP 3.0, NULL security) in the standard library: enough to
publish Selenium Grid events into the event bus's XSUB port, as a Grid component's PUB does.

It announces version 3.0, so the peer sends no heartbeats (ZMTP 3.1) it would have to answer,
and it ignores the subscriptions the XSUB side sends: a publisher may send everything.
"""

import socket
import struct
import threading


class ZmtpError(RuntimeError):
    pass


def _greeting():
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00") + b"\x00"
            + b"\x00" * 31)


def _frame(body, more=False, command=False):
    flags = (0x01 if more else 0) | (0x04 if command else 0)
    if len(body) > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def _ready(socket_type):
    prop = b"Socket-Type"
    return b"\x05READY" + bytes([len(prop)]) + prop + struct.pack(">I", len(socket_type)) + socket_type


class Publisher:
    """Connected to a bus's XSUB address (`--subscribe-events`); `send()` one multipart message."""

    def __init__(self, host, port, timeout=10):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.sendall(_greeting())
        peer = self._read_exact(64)
        if peer[0] != 0xFF or peer[9] != 0x7F or peer[10] < 3:
            raise ZmtpError(f"not a ZMTP 3 peer: {peer[:12]!r}")
        self.sock.sendall(_frame(_ready(b"PUB"), command=True))
        flags, body = self._read_frame()
        if not flags & 0x04 or not body.startswith(b"\x05READY"):
            raise ZmtpError(f"expected READY, got flags {flags} {body[:20]!r}")
        self.lock = threading.Lock()
        # The XSUB side sends its subscriptions; read and drop them so it never blocks.
        self.sock.settimeout(None)
        threading.Thread(target=self._drain, daemon=True).start()

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ZmtpError("connection closed during the handshake")
            buf += chunk
        return buf

    def _read_frame(self):
        flags = self._read_exact(1)[0]
        size = struct.unpack(">Q", self._read_exact(8))[0] if flags & 0x02 else self._read_exact(1)[0]
        return flags, self._read_exact(size)

    def _drain(self):
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass

    def send(self, frames):
        data = b"".join(_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames))
        with self.lock:
            self.sock.sendall(data)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

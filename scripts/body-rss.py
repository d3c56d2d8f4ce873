#!/usr/bin/env python3
"""Peak memory of one member for one hostile `POST /se/grid/session` body.

Starts a fresh single member from a gridraft binary on free 127.0.0.1 ports, sends one body and
prints the member's peak RSS (VmHWM from /proc/<pid>/status) before and after, the answer's
status and message, and the size of what was stored (if anything).

    scripts/body-rss.py [--bin target/debug/gridraft] KIND SIZE [KIND SIZE ...]

KIND is one of
    flat    capabilities {"a": [0,0,0,...]}: two bytes per JSON value, the densest body
    nested  capabilities {"a": [[[...[0,0,...]...]]]}: 20-deep arrays, each value indented
    string  capabilities {"a": "////..."}: one string that escapes to six times its size
    text    capabilities {"a": "aaaa..."}: one plain string, the baseline of storing SIZE bytes
    numbers capabilities {"a": [10000000000000,...]}: as many values as a body may hold
    uri     a node URI of SIZE bytes
    invalid SIZE bytes of `/`, not JSON: the refusal quotes the body, as Java's does
SIZE is the body size in bytes (suffixes k and m: 1m = 1048576). Each KIND runs on its own
member, so each peak is that body's alone.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

SESSION = '{"sessionId": "%s", "start": 0, "stereotype": {}, "uri": %s, "capabilities": %s}'


def size(text):
    text = text.lower()
    for suffix, factor in (("k", 1024), ("m", 1024 * 1024)):
        if text.endswith(suffix):
            return int(text[:-1]) * factor
    return int(text)


def body(kind, n):
    head = SESSION % ("s", '"http://node:5555"', '{"a": %s}')
    room = n - len(head) + 2
    if kind == "flat":
        caps = "[" + ",".join(["0"] * (room // 2)) + "]"
    elif kind == "nested":
        depth = 20
        inner = (room - 2 * depth) // 2
        caps = "[" * depth + ",".join(["0"] * inner) + "]" * depth
    elif kind == "numbers":
        caps = "[" + ",".join(["10000000000000"] * (room // 15)) + "]"
    elif kind == "text":
        caps = '"' + "a" * (room - 2) + '"'
    elif kind == "string":
        caps = '"' + "/" * (room - 2) + '"'
    elif kind == "invalid":
        return b"/" * n
    elif kind == "uri":
        uri = "http://node:5555/" + "a" * (n - len(SESSION) - 20)
        return (SESSION % ("s", json.dumps(uri), "{}")).encode()
    else:
        raise SystemExit(f"unknown kind {kind}")
    return (head % caps).encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def request(port, method, path, data=None, timeout=120):
    """One HTTP/1.1 exchange; returns (status, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        if data is not None:
            head += f"Content-Length: {len(data)}\r\n"
        s.sendall(head.encode() + b"\r\n")
        if data is not None:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the whole body was read; the answer is still there
        chunks = []
        try:
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    if not raw:
        return 0, b""
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), rest


def run(binary, kind, n):
    data = body(kind, n)
    with tempfile.TemporaryDirectory() as d:
        public, peer = free_port(), free_port()
        proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{public}",
             "--peer-listen", f"127.0.0.1:{peer}", "--data-dir", d, "--worker-threads", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if request(public, "GET", "/readyz", timeout=2)[0] == 204:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            else:
                raise SystemExit("member did not become ready")
            before = hwm_kib(proc.pid)
            started = time.time()
            status, answer = request(public, "POST", "/se/grid/session", data)
            took = time.time() - started
            after = hwm_kib(proc.pid)
            try:
                message = json.loads(answer)["value"]["message"][:110]
            except (ValueError, KeyError, TypeError):
                message = answer[:40]
            got_status, got = request(public, "GET", "/se/grid/session/s")
            stored = f"{len(got)} bytes" if got_status == 200 else "nothing"
            print(f"{kind:6} body {len(data):>9} B: {status} in {took:5.1f}s, "
                  f"VmHWM {before / 1024:6.1f} -> {after / 1024:6.1f} MiB "
                  f"(+{(after - before) / 1024:.1f}), stored {stored}; {message}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="target/debug/gridraft")
    parser.add_argument("cases", nargs="+")
    args = parser.parse_args()
    if len(args.cases) % 2:
        raise SystemExit("give KIND SIZE pairs")
    for kind, n in zip(args.cases[::2], args.cases[1::2]):
        run(args.bin, kind, size(n))


if __name__ == "__main__":
    sys.exit(main())

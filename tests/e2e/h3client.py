#!/usr/bin/env python3
"""An independent HTTP/3 client for the end-to-end tests, on aioquic's H3Connection.

One QUIC connection per run. Requests are read from stdin, one JSON object a line:

    {"method": "GET", "path": "/x", "authority": "web.example.com:8443",
     "headers": {"x-a": "1"}, "body_size": 0}

and each answer is printed as one JSON line on stdout:

    {"status": 200, "headers": {...}, "body": "...", "body_len": N,
     "body_sha256": "...", "peer_serial": "1001", "conn": "<connection id>",
     "resumed": false, "early_data": false}

or {"error": "..."} when the request (or the connection) failed. A request body of
`body_size` bytes is the repeating pattern bytes(range(256)), so the backend's byte sum can be
checked. Lines are answered in order on the same connection, so a test can do something
(reload the gateway) between two requests and see whether the connection survived.
"""

import argparse
import asyncio
import hashlib
import json
import pickle
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.waiting = {}
        self.terminated = None

    def quic_event_received(self, event):
        if isinstance(event, ConnectionTerminated):
            self.terminated = f"connection closed: code {event.error_code:#x} {event.reason_phrase}"
            for fut, _ in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(self.terminated))
            return
        if isinstance(event, StreamReset) and event.stream_id in self.waiting:
            fut, _ = self.waiting[event.stream_id]
            if not fut.done():
                fut.set_exception(ConnectionError(f"stream reset: code {event.error_code:#x}"))
            return
        for ev in self.http.handle_event(event):
            if not isinstance(ev, (HeadersReceived, DataReceived)):
                continue
            entry = self.waiting.get(ev.stream_id)
            if entry is None:
                continue
            fut, events = entry
            events.append(ev)
            if ev.stream_ended and not fut.done():
                fut.set_result(events)

    async def request(self, spec, timeout):
        if self.terminated:
            raise ConnectionError(self.terminated)
        sid = self._quic.get_next_available_stream_id()
        body = pattern(int(spec.get("body_size", 0)))
        headers = [
            (b":method", spec.get("method", "GET").encode()),
            (b":scheme", b"https"),
            (b":authority", spec["authority"].encode()),
            (b":path", spec.get("path", "/").encode()),
            (b"user-agent", b"aioquic-e2e"),
        ]
        for k, v in spec.get("headers", {}).items():
            headers.append((k.lower().encode(), str(v).encode()))
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        fut = asyncio.get_running_loop().create_future()
        self.waiting[sid] = (fut, [])
        self.http.send_headers(sid, headers, end_stream=not body)
        if body:
            self.http.send_data(sid, body, end_stream=True)
        self.transmit()
        try:
            events = await asyncio.wait_for(fut, timeout)
        finally:
            del self.waiting[sid]
        return answer(events)


def pattern(n):
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


def answer(events):
    status, headers, data = 0, {}, bytearray()
    for ev in events:
        if isinstance(ev, HeadersReceived):
            for k, v in ev.headers:
                k, v = k.decode(), v.decode(errors="replace")
                if k == ":status":
                    status = int(v)
                else:
                    headers[k] = v
        else:
            data.extend(ev.data)
    out = {
        "status": status,
        "headers": headers,
        "body_len": len(data),
        "body_sha256": hashlib.sha256(data).hexdigest(),
    }
    if len(data) <= 65536:
        out["body"] = data.decode(errors="replace")
    return out


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", required=True, help="host:port of the gateway")
    ap.add_argument("--server-name", required=True, help="SNI and certificate name")
    ap.add_argument("--cacert", required=True)
    ap.add_argument("--cert", help="client certificate (MUTUAL)")
    ap.add_argument("--key", help="client key (MUTUAL)")
    ap.add_argument("--ticket", help="session ticket file: resumed (0-RTT) if present, saved")
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()

    host, port = args.connect.rsplit(":", 1)
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=args.server_name)
    cfg.load_verify_locations(args.cacert)
    if args.cert:
        cfg.load_cert_chain(args.cert, args.key)
    if args.ticket:
        try:
            with open(args.ticket, "rb") as f:
                cfg.session_ticket = pickle.load(f)
        except FileNotFoundError:
            pass

    def save_ticket(ticket):
        if args.ticket:
            with open(args.ticket, "wb") as f:
                pickle.dump(ticket, f)

    try:
        async with connect(
            host,
            int(port),
            configuration=cfg,
            create_protocol=Client,
            session_ticket_handler=save_ticket,
            # With a ticket, the first request goes out as 0-RTT data.
            wait_connected=cfg.session_ticket is None,
        ) as client:
            conn = client._quic.host_cid.hex()
            reader = asyncio.StreamReader()
            await asyncio.get_running_loop().connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
            )
            while True:
                line = await reader.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                spec = json.loads(line)
                try:
                    out = await client.request(spec, args.timeout)
                except (ConnectionError, asyncio.TimeoutError) as e:
                    emit({"error": str(e) or type(e).__name__})
                    continue
                cert = getattr(client._quic.tls, "_peer_certificate", None)
                if cert is not None:
                    out["peer_serial"] = format(cert.serial_number, "x")
                out["conn"] = conn
                out["resumed"] = client._quic.tls.session_resumed
                out["early_data"] = client._quic.tls.early_data_accepted
                emit(out)
    except Exception as e:  # the handshake failed, or the connection could not start
        emit({"error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

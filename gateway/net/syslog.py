"""Sending audit messages to a syslog collector: RFC 5424 messages over UDP (RFC 5426, one per
datagram) or TLS (RFC 5425, octet-counted frames), as IHE ATNA asks.

`SyslogSender.send` only queues: the node's threads never wait for the collector. One thread
sends; over TLS it keeps one connection, reconnects with backoff when it drops and re-sends the
message it was on. A collector away for long costs the oldest messages beyond `MAX_QUEUED`
(counted, and logged when the sender catches up).
"""

from __future__ import annotations

import collections
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.logs import get_logger

MAX_QUEUED = 10_000
FACILITY_AUTHPRIV, SEVERITY_NOTICE = 10, 5  # IHE ATNA: <85>
PRI = FACILITY_AUTHPRIV * 8 + SEVERITY_NOTICE
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"  # RFC 5424 6.4: a UTF-8 MSG starts with the BOM


@dataclass(frozen=True)
class Collector:
    """Where the messages go: `udp://HOST:PORT` or `tls://HOST:PORT`."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Collector:
        """The collector named by `url` (ValueError naming what is wrong)."""
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tls"):
            raise ValueError(f"{url!r}: the scheme must be udp:// or tls://")
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None or not 0 < port < 65536 or parts.path:
            raise ValueError(f"{url!r}: expected udp://HOST:PORT or tls://HOST:PORT")
        return cls(parts.scheme, parts.hostname, port)


def frame(xml: bytes, at: float, hostname: str, app: str = "gantry") -> bytes:
    """One RFC 5424 message: header, no structured data, the XML as MSG."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"
    header = f"<{PRI}>1 {stamp} {hostname[:255] or '-'} {app} {os.getpid()} {MSGID} - "
    return header.encode("ascii", "replace") + BOM + xml


class SyslogSender:
    """Queues messages and sends them from one thread (see the module docstring)."""

    def __init__(self, collector: Collector, tls: ssl.SSLContext | None = None) -> None:
        self.collector = collector
        self.tls = tls
        self.hostname = socket.gethostname()
        self.log = get_logger("gateway.audit")
        self._queue: collections.deque[bytes] = collections.deque(maxlen=MAX_QUEUED)
        self._ready = threading.Condition()
        self._closing = False
        self._busy = False
        self.dropped = 0
        self.sent = 0
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="atna-syslog", daemon=True)
        self._thread.start()

    def send(self, xml: bytes, at: float | None = None) -> None:
        """Queue one audit message (never blocks)."""
        message = frame(xml, time.time() if at is None else at, self.hostname)
        with self._ready:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(message)
            self._ready.notify()

    def close(self, timeout: float = 5.0) -> bool:
        """Send what is queued (within `timeout`), then stop; True when nothing was left."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._ready.wait(0.05)
            left = len(self._queue)
            self._closing = True
            self._ready.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1)
        self._disconnect()
        if left:
            self.log.warning("audit.unsent", messages=left, collector=self._where())
        return left == 0

    def _where(self) -> str:
        c = self.collector
        return f"{c.scheme}://{c.host}:{c.port}"

    def _run(self) -> None:
        backoff = 0.5
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if self._closing:
                    return
                message = self._queue[0]
                self._busy = True
            try:
                self._deliver(message)
            except OSError as exc:
                self._disconnect()
                self.log.warning("audit.send_failed", collector=self._where(),
                                 error=exc.strerror or type(exc).__name__, retry_in=backoff)
                with self._ready:
                    self._busy = False
                    self._ready.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 0.5
            with self._ready:
                if self._queue and self._queue[0] is message:
                    self._queue.popleft()
                self._busy = False
                self.sent += 1
                self._ready.notify_all()

    def _deliver(self, message: bytes) -> None:
        c = self.collector
        if c.scheme == "udp":
            if self._sock is None:
                self._sock = socket.socket(socket.AF_INET6 if ":" in c.host else socket.AF_INET,
                                           socket.SOCK_DGRAM)
            self._sock.sendto(message, (c.host, c.port))
            return
        if self._sock is None:
            raw = socket.create_connection((c.host, c.port), timeout=10)
            assert self.tls is not None
            self._sock = self.tls.wrap_socket(raw, server_hostname=c.host)
            self._sock.settimeout(30)
            self.log.info("audit.connected", collector=self._where())
        self._sock.sendall(f"{len(message)} ".encode() + message)

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


def tls_context(ca_certificates: str | None, certificate: str | None,
                private_key: str | None) -> ssl.SSLContext:
    """A client context for the collector: TLS 1.2 or later, the collector's certificate checked
    against `ca_certificates` (else the system's), this node's certificate when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_certificates)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate:
        context.load_cert_chain(certificate, private_key)
    return context

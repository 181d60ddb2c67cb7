"""The receiver's listening socket: accepts connections, caps them per peer, and runs each TLS
handshake in the connection's own thread, under a timeout.

pynetdicom's server does the TLS handshake in its accept loop, with no timeout: one TCP
connection that never starts a handshake stops the port from accepting anyone else. And it
counts connections that never asked for an association against the association limit, so
100 bare connections lock real callers out with "Local Limit Exceeded" until its ACSE timeout
ends them. Here a peer (an IP address) holds at most `per_peer` connections — more are closed
at accept — and a connection that has not completed its handshake and association request
within REQUEST_TIMEOUT seconds is closed.
"""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from gateway.logs import get_logger
from gateway.net import set_nodelay
from gateway.net.tls import tls_failure

# Seconds a caller has, once connected, to finish its TLS handshake and (separately) to send
# its A-ASSOCIATE-RQ. Modalities send the request at once; pynetdicom's default is 30 s.
REQUEST_TIMEOUT = 5.0

_log = get_logger("gateway.receiver")


class ConnectionServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with per-peer caps and the handshake off the accept loop.
    `per_peer` is set by the receiver after construction."""

    per_peer: int = 16
    reuse_port: bool = False  # set on a subclass: it must be known before the socket binds

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._starting: dict[str, int] = {}  # accepted, association thread not yet running

    def connections_from(self, peer: str) -> int:
        """Connections a peer holds: associations (asked for or not) and those starting."""
        held = sum(1 for a in self.active_associations
                   if a.is_acceptor and a.requestor.address == peer)
        return held + self._starting.get(peer, 0)

    def server_bind(self) -> None:
        if self.reuse_port:  # several receiver processes on one port: the kernel balances
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only (pynetdicom would also do the TLS handshake here)."""
        return self.socket.accept()  # type: ignore[union-attr]

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """In the accept loop: refuse (close) a connection from a peer that already holds
        `per_peer`."""
        peer = client_address[0]
        with self._lock:
            if self.connections_from(peer) < self.per_peer:
                self._starting[peer] = self._starting.get(peer, 0) + 1
                return True
        _log.warning("connection.refused", peer=peer, limit=self.per_peer,
                     reason="too many connections from this peer")
        return False

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake (if any), then pynetdicom's handler
        (which starts the association's thread)."""
        peer = client_address[0]
        try:
            set_nodelay(request)
            if self.ssl_context is not None:
                request = self._handshake(request, peer)
            if request is not None:
                super().finish_request(request, client_address)
        finally:
            with self._lock:
                left = self._starting[peer] - 1
                if left:
                    self._starting[peer] = left
                else:
                    del self._starting[peer]

    def _handshake(self, sock: socket.socket, peer: str) -> ssl.SSLSocket | None:
        assert self.ssl_context is not None
        try:
            sock.settimeout(REQUEST_TIMEOUT)
            tls = self.ssl_context.wrap_socket(sock, server_side=True)
            tls.settimeout(None)
            return tls
        except (OSError, ssl.SSLError) as exc:
            _log.warning("tls.refused", peer=peer, reason=tls_failure(exc))
            try:
                sock.close()
            except OSError:
                pass
            return None


class SharedPortServer(ConnectionServer):
    """A ConnectionServer that shares its port with the node's other receiver processes."""

    reuse_port = True

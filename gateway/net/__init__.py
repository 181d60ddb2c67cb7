"""DICOM networking: the C-STORE/C-ECHO receiver and the C-STORE forwarder.

Importing any `gateway.net` module applies pynetdicom's process-wide settings for every
association Gantry makes, here and nowhere else.
"""

import socket

from pynetdicom import _config

_config.STORE_SEND_CHUNKED_DATASET = True  # a file is sent as its bytes: no decode, flat memory
# pynetdicom's logger is silenced (gateway.logs: it can log values); without its standard
# handlers no association formats a log line per PDU only to drop it.
_config.LOG_HANDLER_LEVEL = "none"


def set_nodelay(sock: socket.socket | None) -> None:
    """Turn Nagle's algorithm off (else each small PDU waits for the peer's delayed ACK)."""
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

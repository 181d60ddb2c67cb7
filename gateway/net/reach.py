"""Why a destination could not be reached, in words an operator can act on: the host, the port
and the cause (pynetdicom reports a refused or timed-out connection only as "no association",
and a name that does not resolve as a bare `gaierror`)."""

from __future__ import annotations

import socket


def _cause(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return f"the host name does not resolve ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer to the connection (timed out: a firewall, or the host is down)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def connection_problem(host: str, port: int, exc: BaseException | None = None,
                       timeout: float = 5.0) -> str:
    """'connection failed: HOST:PORT: CAUSE'. Without `exc` (the association simply did not
    start) the cause is found by connecting again: refused, unreachable, timed out, or connected
    (then the peer answered no association request: not a DICOM node, or it aborted)."""
    if exc is None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as probe:
            exc = probe
    cause = (_cause(exc) if exc is not None else
             "the connection opened but the peer did not answer the association request "
             "(not a DICOM node on that port, or it aborted)")
    return f"connection failed: {host}:{port}: {cause}"

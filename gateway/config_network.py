"""The configuration of the node's network side: its own DICOM node (TLS, callers, receivers),
the destinations it forwards to, the metrics endpoint and the ATNA audit collector."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


def check_ae(title: str) -> None:
    if not AE_RE.match(title) or not title.strip():
        raise ValueError(f"AE title {title!r} must be 1-16 printable characters, no backslash")


@dataclass(frozen=True)
class CallerConfig:
    """A calling AE allowed to associate, optionally only from one address."""

    ae_title: str
    address: str | None = None


@dataclass(frozen=True)
class ServerTLSConfig:
    """DICOM TLS on the receiver (PS3.15 Annex B): the node's certificate and key, and the CAs
    that sign its callers' certificates."""

    certificate: str
    private_key: str
    ca_certificates: str | None = None
    require_client_certificate: bool = False

    def __post_init__(self) -> None:
        if self.require_client_certificate and self.ca_certificates is None:
            raise ValueError("require_client_certificate needs ca_certificates (the CAs "
                             "that sign the callers' certificates)")


@dataclass(frozen=True)
class ClientTLSConfig:
    """DICOM TLS to a destination: the CAs its certificate must chain to (else the system's),
    and the node's own certificate and key when the destination asks for one."""

    ca_certificates: str | None = None
    certificate: str | None = None
    private_key: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both certificate and private_key, or neither")


def default_receivers() -> int:
    """Receiver processes that suit this machine: one per two cores (the rest de-identify)."""
    return max(1, min(8, (os.cpu_count() or 1) // 2))


@dataclass(frozen=True)
class NetworkConfig:
    """The gateway's own DICOM node."""

    ae_title: str = "GANTRY"
    host: str = "0.0.0.0"
    port: int = 11112
    max_pdu: int = 65536
    allowed_callers: tuple[CallerConfig, ...] = ()  # empty: any caller
    workers: int = 2
    tls: ServerTLSConfig | None = None
    accept_any_called_ae: bool = False  # else only ae_title and the routes' called_ae
    max_associations: int = 64
    max_associations_per_peer: int = 16  # per IP address, connections not yet associated too
    # processes listening on the port (SO_REUSEPORT); default: one per two cores, 1 to 8
    receivers: int = field(default_factory=default_receivers)

    def __post_init__(self) -> None:
        check_ae(self.ae_title)
        if self.receivers < 1:
            raise ValueError(f"receivers: {self.receivers} is not a number of processes "
                             "(1 or more)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0..65535")
        if self.max_associations < 1 or self.max_associations_per_peer < 1:
            raise ValueError("max_associations and max_associations_per_peer must be >= 1")


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus /metrics and the /healthz check over HTTP; ready needs this much free disk
    where the state directory is."""

    host: str = "127.0.0.1"
    port: int = 9112
    min_free_disk_mb: int = 1024

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 0..65535")


@dataclass(frozen=True)
class DestinationConfig:
    """A research PACS reached by C-STORE."""

    ae_title: str
    host: str
    port: int
    associations: int = 1
    max_retries: int = 8
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 300.0
    tls: ClientTLSConfig | None = None

    def __post_init__(self) -> None:
        check_ae(self.ae_title)


@dataclass(frozen=True)
class AuditConfig:
    """IHE ATNA audit messages (PS3.15 A.5) to a syslog collector: `syslog` is
    `udp://HOST:PORT` or `tls://HOST:PORT`; for TLS, the CA bundle the collector's certificate
    is checked against (default: the system's) and this node's certificate and key when the
    collector asks for one."""

    syslog: str | None = None
    ca_certificates: str | None = None
    certificate: str | None = None
    private_key: str | None = None

    def __post_init__(self) -> None:
        if self.syslog is None:
            if self.ca_certificates or self.certificate or self.private_key:
                raise ValueError("certificates are given but no 'syslog' collector")
            return
        from gateway.net.syslog import Collector

        scheme = Collector.parse(self.syslog).scheme
        if scheme == "udp" and (self.ca_certificates or self.certificate or self.private_key):
            raise ValueError("certificates are for tls:// collectors; udp:// has none")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both 'certificate' and 'private_key', or neither")

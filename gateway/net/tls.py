"""DICOM TLS (PS3.15 Annex B secure transport, TLS 1.2 or later): the SSL contexts of the
receiver and of each destination, built from the configuration. A file that cannot be read or
loaded is a ConfigError naming the configuration file, the key and the problem."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError
from gateway.config_network import ClientTLSConfig, ServerTLSConfig


def tls_failure(exc: BaseException) -> str:
    """Why a handshake failed, in a few words (what OpenSSL says; nothing the peer sent)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or type(exc).__name__).lower().replace("_", " ")
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__


class _RecordingSocket(ssl.SSLSocket):
    """Keeps why its handshake failed on its context (pynetdicom connects in its own thread
    and only logs the error, and Gantry silences pynetdicom's log)."""

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except ssl.SSLError as exc:
            self.context.failure = tls_failure(exc)  # type: ignore[attr-defined]
            raise


class ClientContext(ssl.SSLContext):
    """A client context that remembers why its last handshake failed (one context per
    destination: the slots of one destination share what they learn about it)."""

    sslsocket_class = _RecordingSocket

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        self.failure: str | None = None

    def take_failure(self) -> str | None:
        """Why the last handshake failed (then forgotten), or None."""
        failure, self.failure = self.failure, None
        return failure


def _file(config: Config, key: str, name: str) -> str:
    path = Path(name)
    if not path.is_absolute():
        path = config.base_dir / path
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(config.source, key, f"cannot read {path}: {exc.strerror}") from None
    return str(path)


def _load_chain(ctx: ssl.SSLContext, config: Config, key: str, certificate: str,
                private_key: str) -> None:
    cert = _file(config, f"{key}.certificate", certificate)
    pkey = _file(config, f"{key}.private_key", private_key)
    try:
        ctx.load_cert_chain(cert, pkey)
    except ssl.SSLError as exc:
        raise ConfigError(config.source, key, f"certificate {cert} and private key {pkey} do "
                          f"not load together ({exc.reason or exc})") from None


def _load_cas(ctx: ssl.SSLContext, config: Config, key: str, name: str) -> None:
    path = _file(config, key, name)
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(config.source, key, f"{path} holds no CA certificate in PEM "
                          f"({exc.reason or exc})") from None


def server_context(config: Config) -> ssl.SSLContext | None:
    """The receiver's context (None when `network.tls` is not set): its certificate, and
    callers' certificates checked against `ca_certificates` — required, or checked only when
    a caller presents one."""
    tls: ServerTLSConfig | None = config.network.tls
    if tls is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, config, "network.tls", tls.certificate, tls.private_key)
    if tls.ca_certificates is not None:
        _load_cas(ctx, config, "network.tls.ca_certificates", tls.ca_certificates)
        ctx.verify_mode = (ssl.CERT_REQUIRED if tls.require_client_certificate
                           else ssl.CERT_OPTIONAL)
    return ctx


def client_context(config: Config, name: str) -> ClientContext | None:
    """The context for destination `name` (None when its `tls` is not set): its certificate
    must chain to `ca_certificates` (else to the system's CAs) and name the configured host."""
    tls: ClientTLSConfig | None = config.destinations[name].tls
    if tls is None:
        return None
    key = f"destinations.{name}.tls"
    ctx = ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_certificates is not None:
        _load_cas(ctx, config, f"{key}.ca_certificates", tls.ca_certificates)
    else:
        ctx.load_default_certs()
    if tls.certificate is not None and tls.private_key is not None:
        _load_chain(ctx, config, key, tls.certificate, tls.private_key)
    return ctx

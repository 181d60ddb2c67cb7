"""The C-STORE / C-ECHO SCP: spool each object durably, commit its job, then answer Success.

The handler never decodes the dataset and never waits for de-identification: it writes the
bytes as received (File Meta + raw data set) to `spool/<job id>.dcm` (gateway/spoolfile.py),
fsyncs it, commits a `received` job in SQLite and returns 0x0000. The fsync'd spool file is
the durable record: the commit does not wait for the disk (a row lost to a power cut is made
again from the file at the next start), so each answer waits for one flush, not two. A disk or
database failure answers 0xA700 (Out of Resources), bytes that are not a data set 0xC210
(Cannot understand) — never a false Success.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    MPEGTransferSyntaxes,
    RLELossless,
    UID_dictionary,
)
from pynetdicom import AE, build_context, evt, register_uid
from pynetdicom.pdu_primitives import SOPClassCommonExtendedNegotiation
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import Verification, uid_to_service_class

from gateway import spoolfile
from gateway.config import Config, NetworkConfig
from gateway.deid.keyed import DICOM_ROOT
from gateway.logs import get_logger
from gateway.net import set_nodelay
from gateway.net.reactor_pause import idle_checkpoint, wake
from gateway.net.server import REQUEST_TIMEOUT, ConnectionServer, SharedPortServer
from gateway.net.tls import server_context
from gateway.spoolfile import IMPLEMENTATION_VERSION, sop_hash
from gateway.store import Store

TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian, *JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes,
    *JPEG2000TransferSyntaxes, RLELossless,
    *MPEGTransferSyntaxes,  # video: de-identified header-only; no decoder, so no redaction
]

# Every storage SOP class in the standard's registry, retired ones included (old ultrasound
# and nuclear medicine machines still send them); not Media Storage Directory, not the
# Storage Commitment services. pynetdicom serves only the classes it has registered.
_STORAGE = [uid for uid, (name, kind, *_rest) in UID_dictionary.items()
            if kind == "SOP Class" and "Storage" in name
            and not name.startswith(("Storage Commitment", "Media Storage"))]


def _register_storage_classes() -> None:
    for uid in _STORAGE:
        if uid_to_service_class(uid) is ServiceClass and UID_dictionary[uid][4].isidentifier():
            register_uid(uid, UID_dictionary[uid][4], StorageServiceClass)


_register_storage_classes()
STORAGE_SOP_CLASSES = sorted(uid for uid in _STORAGE
                             if uid_to_service_class(uid) is not ServiceClass)

STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
STORAGE_SERVICE_CLASS = "1.2.840.10008.4.2"


def unlisted_storage_class(uid: str) -> bool:
    """A SOP class served as storage although pynetdicom does not know it: a vendor's private
    class (Siemens CSA Non-Image, …) or a public storage class newer than pydicom."""
    if uid in UID_dictionary or len(uid) > 64:  # known (storage or not), or no UID at all
        return False
    return not uid.startswith(DICOM_ROOT) or uid.startswith(STORAGE_ROOT)


def _proposed_classes(assoc: Any) -> list[str]:
    """The abstract syntaxes the caller proposes, each once (one context per syntax is usual)."""
    proposed = assoc.requestor.primitive.presentation_context_definition_list
    return list(dict.fromkeys(str(cx.abstract_syntax) for cx in proposed))


LOCK_POLL = 0.0002  # seconds between the receiver's attempts at SQLite's write lock
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC210


def _looks_like_dataset(data: bytes, transfer_syntax: str) -> bool:
    """A cheap check that the bytes start with a data-set element (not the full parse)."""
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        return len(data) > 2
    if len(data) < 8:
        return False
    fmt = ">HH" if transfer_syntax == ExplicitVRBigEndian else "<HH"
    group, _elem = struct.unpack(fmt, data[:4])
    return group >= 0x0008 and group != 0xFFFE


def _wait_quietly(future: Future) -> None:
    try:
        future.result()
    except OSError:
        pass


@dataclass
class _Pending:
    job_id: str
    fields: dict[str, Any]
    done: bool = False
    error: BaseException | None = None


class Receiver:
    """A pynetdicom SCP that turns each C-STORE into a spooled file and a `received` job."""

    def __init__(self, config: Config, site_key: bytes, store_path: Path, spool_dir: Path,
                 on_received: Callable[[str], None] | None = None,
                 on_success: Callable[[float], None] | None = None) -> None:
        self.net: NetworkConfig = config.network
        self.key = site_key
        self.store_path = store_path
        self.spool_dir = spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.on_received = on_received
        self.on_success = on_success  # told each Success's latency in seconds
        self.log = get_logger("gateway.receiver")
        self._store: Store | None = None
        self._commit = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        self._fsyncer = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fsync")
        self._server: Any = None
        self.tls = server_context(config)  # ConfigError when a file will not load
        self._allowed = [(c.ae_title.strip(), c.address) for c in self.net.allowed_callers]
        # The called AE titles answered: the node's own and those its routes select on.
        self._called = None if self.net.accept_any_called_ae else {
            self.net.ae_title.strip(), *(t.strip() for r in config.routes for t in r.called_ae)}
        self.ae = AE(ae_title=self.net.ae_title)
        self.ae.maximum_pdu_size = self.net.max_pdu
        # pynetdicom's own limit counts connections that never asked for an association;
        # `_negotiate` applies `max_associations` to those that did, ConnectionServer caps
        # connections per peer.
        self.ae.maximum_associations = 1_000_000
        self.ae.network_timeout = 60
        self.ae.acse_timeout = REQUEST_TIMEOUT  # to send the A-ASSOCIATE-RQ once connected
        self.ae.dimse_timeout = 120
        self.ae.implementation_version_name = IMPLEMENTATION_VERSION
        # pynetdicom deep-copies the AE's supported contexts into every association (0.25 ms
        # a context: 50 ms of CPU for all storage classes, per association). The AE supports
        # Verification; each association gets the storage classes its caller proposes
        # (`_offer`), from contexts built once here and only read by the negotiation.
        self.ae.add_supported_context(Verification)
        self._storage_contexts = {uid: build_context(uid, TRANSFER_SYNTAXES)
                                  for uid in STORAGE_SOP_CLASSES}

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Listen (non-blocking: pynetdicom serves each association in its own thread)."""
        # The spool file is the durable record (see the module's docstring): the job's commit
        # need not reach the disk before the answer, nor pay for a checkpoint.
        # A worker's or forwarder's transaction holds the write lock for a fraction of a
        # millisecond (longer when the niced process is preempted): look again every 0.2 ms
        # rather than sleep SQLite's 1, 2, 5 ms (measured: p90 of the commit 1.4 ms, 10 % of
        # the time a sender waited).
        self._store = Store(self.store_path, durable=False, checkpoints=False,
                            lock_poll=LOCK_POLL)
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_SOP_COMMON, self._on_sop_common),
            (evt.EVT_PDU_RECV, wake),
        ]
        server = self.ae.make_server((self.net.host, self.net.port), evt_handlers=handlers,
                                     ssl_context=self.tls,
                                     server_class=SharedPortServer if self.net.receivers > 1
                                     else ConnectionServer)
        server.per_peer = self.net.max_associations_per_peer
        self._accepting = threading.Thread(target=server.serve_forever, name="gantry-accept",
                                           daemon=True)
        self._accepting.start()
        self.ae._servers.append(server)  # as AE.start_server does: shutdown() removes it
        self._server = server
        self.log.info("receiver.listening", ae_title=self.net.ae_title, host=self.net.host,
                      port=self.port, tls=self.tls is not None)

    def listening(self) -> bool:
        """The socket is open and its accept loop runs."""
        return (self._server is not None and self._server.socket.fileno() >= 0
                and self._accepting.is_alive())

    def bind(self, event: Any, handler: Callable[[Any], None]) -> None:
        """Add a pynetdicom event handler to the listening server (after `start`)."""
        self._server.bind(event, handler)

    def stop_accepting(self) -> None:
        """Close the listening socket (once); associations in flight carry on."""
        if self._server is not None and self._server.socket.fileno() >= 0:
            self._server.shutdown()  # stops the accept loop and closes the socket
            self.log.info("receiver.closed")

    def active(self) -> int:
        """Associations receiving now (a bare TCP connection that never asked for an
        association is not a receive in flight)."""
        return len([a for a in self.ae.active_associations
                    if a.is_acceptor and a.is_alive() and a.is_established])

    def wait_idle(self, timeout: float) -> bool:
        """Wait for associations in flight to end; True when none is left."""
        deadline = threading.Event()
        waited = 0.0
        while self.active() and waited < timeout:
            deadline.wait(0.05)
            waited += 0.05
        return self.active() == 0

    def abort_all(self) -> None:
        for assoc in list(self.ae.active_associations):
            assoc.abort()

    def close(self) -> None:
        """Release the fsync threads and the database (after abort_all: a handler still
        running answers Out of Resources)."""
        self._fsyncer.shutdown()
        with self._commit:
            while self._committing:
                self._commit.wait()
            if self._store is not None:
                self._store.close()
                self._store = None

    # ------------------------------------------------------------------ handlers

    def _allowed_caller(self, calling: str, address: str) -> bool:
        if not self._allowed:
            return True
        return any(calling == ae and (addr is None or addr == address)
                   for ae, addr in self._allowed)

    def _on_open(self, event: Any) -> None:
        assoc = event.assoc
        set_nodelay(getattr(assoc.dul.socket, "socket", None))
        # An association a modality holds open without sending polls slowly (reactor_pause:
        # `wake` brings it back); pynetdicom's own checkpoint is set (open) here, so the swap
        # is seamless.
        assoc._reactor_checkpoint = idle_checkpoint(assoc)
        address = event.address[0]
        acse = assoc.acse
        negotiate = acse._negotiate_as_acceptor

        def checked() -> None:
            # The rejects pynetdicom's own checks send: rejected-permanent, service-user,
            # "calling (or called) AE title not recognized"; rejected-transient, service-
            # provider (presentation), "local limit exceeded".
            calling = acse.requestor.primitive.calling_ae_title.strip()
            called = acse.requestor.primitive.called_ae_title.strip()
            if not self._allowed_caller(calling, address):
                reject, reason = (0x01, 0x01, 0x03), "calling AE title not recognized"
            elif self._called is not None and called not in self._called:
                reject, reason = (0x01, 0x01, 0x07), "called AE title not recognized"
            elif self._negotiated(assoc) >= self.net.max_associations:
                reject, reason = (0x02, 0x03, 0x02), "local limit exceeded"
            else:
                self._offer(assoc)
                negotiate()
                return
            self.log.warning("association.rejected", calling_ae=calling, called_ae=called,
                             peer=address, reason=reason)
            acse.send_reject(*reject)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()

        acse._negotiate_as_acceptor = checked

    def _negotiated(self, assoc: Any) -> int:
        """Other associations established (connections that never asked for one are not
        counted: ConnectionServer limits those per peer)."""
        return sum(1 for a in self.ae.active_associations
                   if a is not assoc and a.is_acceptor and a.is_established)

    def _offer(self, assoc: Any) -> None:
        """Support, on this association, every storage class its caller proposes: the listed
        ones, and those pynetdicom does not list (a vendor's private class, a public one newer
        than pydicom: nothing a modality sends is refused for its class; the pipeline decides)."""
        contexts = list(assoc.acceptor.supported_contexts)  # Verification
        for uid in _proposed_classes(assoc):
            context = self._storage_contexts.get(uid)
            if context is None and unlisted_storage_class(uid):
                context = build_context(uid, TRANSFER_SYNTAXES)
            if context is not None:
                contexts.append(context)
        assoc.acceptor.supported_contexts = contexts

    def _on_sop_common(self, event: Any) -> dict[str, SOPClassCommonExtendedNegotiation]:
        """Map each proposed storage class that pynetdicom does not list to the Storage Service
        Class: the SOP Class Common Extended Negotiation answer pynetdicom consults to serve a
        C-STORE (PS3.7 D.3.3.6). The caller's own items get pynetdicom's default answer: none
        accepted."""
        items = {}
        for uid in _proposed_classes(event.assoc):
            if unlisted_storage_class(uid):
                item = SOPClassCommonExtendedNegotiation()
                item.sop_class_uid, item.service_class_uid = uid, STORAGE_SERVICE_CLASS
                items[uid] = item
        return items

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _add_job(self, job_id: str, **fields: Any) -> None:
        """Commit a received job. Group commit: whichever handler finds no commit running
        commits everything queued so far in one transaction; the others wait for theirs."""
        item = _Pending(job_id, fields)
        with self._commit:
            self._queue.append(item)
            while not item.done:
                if self._committing:
                    self._commit.wait()
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                self._commit.release()
                error: BaseException | None = None
                try:
                    assert self._store is not None
                    self._store.add_jobs([(p.job_id, p.fields) for p in batch])
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    error = exc
                finally:
                    self._commit.acquire()
                for p in batch:
                    p.done, p.error = True, error
                self._committing = False
                self._commit.notify_all()
        if item.error is not None:
            raise item.error

    def _on_store(self, event: Any) -> int:
        started = time.perf_counter()
        job_id = uuid.uuid4().hex
        try:
            req = event.request
            sop_class = str(req.AffectedSOPClassUID)
            sop_uid = str(req.AffectedSOPInstanceUID)
            ts = str(event.context.transfer_syntax)
            data = event.encoded_dataset(include_meta=False)
        except Exception:  # noqa: BLE001 - malformed request: refuse, do not crash
            self.log.warning("store.refused", job=job_id, status=CANNOT_UNDERSTAND,
                             reason="malformed C-STORE request")
            return CANNOT_UNDERSTAND
        calling = event.assoc.requestor.ae_title.strip()
        called = event.assoc.acceptor.ae_title.strip()
        peer = str(event.assoc.requestor.address)
        if not _looks_like_dataset(data, ts):
            self.log.warning("store.refused", job=job_id, status=CANNOT_UNDERSTAND,
                             calling_ae=calling, reason="data set does not start with an element")
            return CANNOT_UNDERSTAND
        path = self.spool_dir / f"{job_id}.dcm"
        try:
            head = spoolfile.header(len(data), sop_class, sop_uid, ts, calling, called, peer)
            fd = spoolfile.write(path, head, data)
        except OSError as exc:
            self._discard(path)
            self.log.error("store.failed", job=job_id, status=OUT_OF_RESOURCES,
                           reason=f"spool write failed: {exc.strerror or type(exc).__name__}")
            return OUT_OF_RESOURCES
        # The file's fsync and the job's commit run at the same time: the answer waits for both.
        # (A job seen before its file is on disk is harmless: workers read the page cache; a
        # crash before the answer means the sender sends it again.)
        try:
            synced = self._fsyncer.submit(os.fsync, fd)
        except RuntimeError:  # closed under a handler still running
            os.close(fd)
            self._discard(path)
            self.log.error("store.failed", job=job_id, status=OUT_OF_RESOURCES,
                           reason="the receiver is closing")
            return OUT_OF_RESOURCES
        try:
            try:
                self._add_job(job_id, calling_ae=calling, called_ae=called, peer=peer,
                              sop_hash=sop_hash(self.key, sop_uid),
                              sop_class_uid=sop_class, transfer_syntax=ts, size=len(data))
            except Exception as exc:  # noqa: BLE001 - any database failure → Out of Resources
                _wait_quietly(synced)
                self._discard(path)
                self.log.error("store.failed", job=job_id, status=OUT_OF_RESOURCES,
                               reason=f"database: {type(exc).__name__}")
                return OUT_OF_RESOURCES
            try:
                synced.result()
            except OSError as exc:
                self.log.error("store.failed", job=job_id, status=OUT_OF_RESOURCES,
                               reason=f"spool fsync failed: {exc.strerror or 'error'}")
                return OUT_OF_RESOURCES
        finally:
            os.close(fd)
        if self.on_received is not None:
            self.on_received(job_id)
        if self.on_success is not None:
            self.on_success(time.perf_counter() - started)
        return SUCCESS

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

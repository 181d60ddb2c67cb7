"""The outbox of one destination: C-STORE SCU over held associations, with retries.

Each of `associations` slots claims due deliveries from SQLite, keeps its association open
across objects (re-associating when the outbox holds a SOP class / transfer syntax the current
one lacks), streams the de-identified file as is, or re-encodes it in an uncompressed syntax the
destination accepted when it refused the original one (`transcode.py`). Outcomes:

- Success → delivered; Warning → delivered, status recorded;
- connection failure (refused, unreachable, association rejected or lost before the C-STORE)
  → pending again after exponential backoff with jitter (forever: a destination down for hours
  loses nothing);
- a failed attempt at the object (transient failure status such as Out of Resources, the
  association aborted or broken during its C-STORE, no answer within the DIMSE timeout) →
  backoff and retry, `max_retries` times after the first attempt, then quarantine with the
  reason;
- any other failure status → quarantine with that status.

A refusal by one destination of a fan-out does not stop the others: the job is quarantined
once they have all finished (store.py).
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.status import code_to_category

from gateway.config import DestinationConfig
from gateway.logs import get_logger
from gateway.metrics import StageRecorder
from gateway.net import set_nodelay
from gateway.net.reach import connection_problem
from gateway.net.reactor_pause import guard
from gateway.net.tls import ClientContext
from gateway.net.transcode import TranscodeError, transcode
from gateway.statedir import StateDir
from gateway.store import DELIVERED, QUARANTINED, Claim, IdlePoll, Store

UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
MAX_CONTEXTS = 128
OPEN, DOWN, REFUSED = "open", "down", "refused"  # what Slot._ensure found


def is_transient(status: int) -> bool:
    """Out of Resources (A7xx) and resource limitation (0213) are worth retrying."""
    return 0xA700 <= status <= 0xA7FF or status == 0x0213


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random."""
    delay = min(cap, base * (2 ** min(attempts, 32)))
    return delay / 2 + rng.uniform(0, delay / 2)


class Slot(threading.Thread):
    """One association to the destination, held across objects."""

    def __init__(self, outbox: Outbox, index: int) -> None:
        super().__init__(name=f"outbox-{outbox.name}-{index}", daemon=True)
        self.outbox = outbox
        self.owner = f"{outbox.owner}:{index}"
        self.assoc: Any = None
        self.contexts: set[tuple[str, str]] = set()
        self.last_used = 0.0
        self.connect_failures = 0
        self.error = ""
        self.rng = random.Random()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        box = self.outbox
        store = Store(box.state.db, durable=False)
        poll = IdlePoll(first=box.poll)
        try:
            while not box.stop.is_set():
                claims: list[Claim] = []
                try:
                    claims = store.claim_deliveries(box.name, self.owner, limit=box.batch)
                    if not claims:
                        if self.assoc is not None and time.monotonic() - self.last_used > box.idle:
                            self._release()
                        box.stop.wait(poll.wait_time())
                        continue
                    poll.found_work()
                    self._send_batch(store, claims)
                except Exception as exc:  # noqa: BLE001 - a slot must not die holding claims
                    box.log.error("outbox.error", destination=box.name,
                                  error=type(exc).__name__)
                    self._release()
                    try:
                        store.release_claims([c.job_id for c in claims], box.name)
                    except Exception:  # noqa: BLE001 - the lease will expire instead
                        pass
                    box.stop.wait(1.0)
        finally:
            self._release()
            store.close()

    def _send_batch(self, store: Store, claims: list[Claim]) -> None:
        box = self.outbox
        link = self._ensure(store, claims)
        if link == REFUSED:
            # The peer took the association and refused every class proposed (the claims'
            # own come first, each with the uncompressed syntaxes too): a permanent refusal.
            for c in claims:
                self._refuse(store, c, f"{box.name} does not accept this SOP class")
            return
        if link == DOWN:
            self.connect_failures += 1
            for c in claims:
                store.retry_later(c.job_id, box.name, error=self.error,
                                  delay=self._delay(c.attempts))
            box.log.warning("destination.unreachable", destination=box.name, error=self.error,
                            queued=len(claims))
            box.stop.wait(min(box.dest.max_backoff_seconds,
                              box.dest.backoff_seconds * 2 ** min(self.connect_failures, 16)))
            return
        self.connect_failures = 0
        for i, claim in enumerate(claims):
            if box.stop.is_set() or self.assoc is None:
                store.release_claims([c.job_id for c in claims[i:]], box.name)
                return
            self._send_one(store, claim)

    def _delay(self, attempts: int) -> float:
        d = self.outbox.dest
        return backoff(attempts, d.backoff_seconds, d.max_backoff_seconds, self.rng)

    # ------------------------------------------------------------------ association

    def _ensure(self, store: Store, claims: list[Claim]) -> str:
        """OPEN (an association that can carry the claims), DOWN (none: `error` says why) or
        REFUSED (the peer accepted none of the presentation contexts proposed)."""
        wanted = {(c.sop_class_uid, c.transfer_syntax) for c in claims}
        if self.assoc is not None and self.assoc.is_established and wanted <= self.contexts:
            return OPEN
        self._release()
        pairs = list(dict.fromkeys(
            [(c.sop_class_uid, c.transfer_syntax) for c in claims]
            + self.outbox.outbox_pairs(store)))
        ae = AE(ae_title=self.outbox.calling_ae)
        ae.acse_timeout = 30
        ae.dimse_timeout = self.outbox.dimse_timeout
        ae.network_timeout = 60
        proposed: set[tuple[str, str]] = set()
        fallback: set[str] = set()
        for sop_class, ts in pairs:
            need = (ts not in UNCOMPRESSED) + (sop_class not in fallback)
            if len(ae.requested_contexts) + need > MAX_CONTEXTS:
                continue
            if ts not in UNCOMPRESSED:
                ae.add_requested_context(sop_class, [ts])
            if sop_class not in fallback:  # for transcoding, and for uncompressed objects
                ae.add_requested_context(sop_class, list(UNCOMPRESSED))
                fallback.add(sop_class)
            proposed.add((sop_class, ts))
        d = self.outbox.dest
        tls = self.outbox.tls
        try:
            assoc = ae.associate(d.host, d.port, ae_title=d.ae_title,
                                 max_pdu=self.outbox.max_pdu,
                                 tls_args=None if tls is None else (tls, d.host))
        except Exception as exc:  # noqa: BLE001 - any socket error is a connection failure
            self.error = connection_problem(d.host, d.port, exc)
            return DOWN
        if assoc.is_rejected:
            answer = assoc.acceptor.primitive
            self.error = (f"association rejected ({answer.result_str}, {answer.source_str}): "
                          f"{answer.reason_str}")
            return DOWN
        if not assoc.is_established:
            if assoc.rejected_contexts:  # pynetdicom aborts when the peer accepted none
                return REFUSED
            failure = tls.take_failure() if tls is not None else None
            self.error = (f"TLS handshake with {d.host}:{d.port} failed: {failure}" if failure
                          else connection_problem(d.host, d.port))
            return DOWN
        set_nodelay(getattr(assoc.dul.socket, "socket", None))
        guard(assoc)  # else a response can be lost to pynetdicom's reactor (reactor_pause.py)
        self.assoc = assoc
        self.contexts = proposed
        self.last_used = time.monotonic()
        self.outbox.log.info("association.open", destination=self.outbox.name,
                             contexts=len(assoc.accepted_contexts))
        return OPEN

    def _release(self) -> None:
        if self.assoc is not None:
            try:
                if self.assoc.is_established:
                    self.assoc.release()
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass
            self.assoc = None
            self.contexts = set()

    # ------------------------------------------------------------------ one object

    def _send_one(self, store: Store, claim: Claim) -> None:
        box = self.outbox
        path = box.state.output(claim.job_id)
        if not path.exists():
            self._refuse(store, claim, "de-identified file missing from the outbox")
            return
        accepted = [cx for cx in self.assoc.accepted_contexts
                    if cx.abstract_syntax == claim.sop_class_uid]
        syntaxes = [str(cx.transfer_syntax[0]) for cx in accepted]
        payload: Any = path
        if claim.transfer_syntax not in syntaxes:
            uncompressed = [ts for ts in syntaxes if ts in UNCOMPRESSED]
            if not uncompressed:
                self._refuse(store, claim, (
                    f"{box.name} accepts no transfer syntax for this SOP class" if accepted
                    else f"{box.name} does not accept this SOP class"))
                return
            try:  # a failure here is the object's, not the connection's: it never goes away
                payload = transcode(path, uncompressed)
            except TranscodeError as exc:
                self._refuse(store, claim, f"{box.name} does not accept this transfer syntax "
                             f"and the object cannot be re-encoded: {exc}")
                return
            except Exception as exc:  # noqa: BLE001 - no decoder, or bad pixel data
                self._refuse(store, claim, f"{box.name} does not accept this transfer syntax "
                             f"and the object cannot be decompressed: {type(exc).__name__}")
                return
            box.log.info("delivery.transcoded", job=claim.job_id, destination=box.name,
                         to_syntax=str(payload.file_meta.TransferSyntaxUID))
        if not self.assoc.is_established:  # gone before the object was sent: not its fault
            self._lost(store, claim, "lost the association before the C-STORE", counted=False)
            return
        sent = time.perf_counter()
        try:
            rsp = self.assoc.send_c_store(payload)
        except (RuntimeError, OSError) as exc:
            self._lost(store, claim, f"broke the connection during the C-STORE "
                                     f"({type(exc).__name__})")
            return
        except Exception as exc:  # noqa: BLE001 - cannot encode: fail closed
            self._refuse(store, claim, f"cannot send to {box.name}: {type(exc).__name__}")
            return
        self.last_used = time.monotonic()
        took = time.perf_counter() - sent
        if box.times is not None:
            box.times.observe("send", took)
        status = getattr(rsp, "Status", None) if rsp else None
        if status is None:  # pynetdicom aborts the association when its DIMSE timeout expires
            self._lost(store, claim, (
                f"did not answer the C-STORE within {box.dimse_timeout:g} s"
                if took >= box.dimse_timeout
                else "aborted the association during the C-STORE"))
            return
        category = code_to_category(status)
        if category in ("Success", "Warning"):
            self._settle(claim.job_id, store.delivered(claim.job_id, box.name, status))
            if category == "Warning":
                box.log.warning("delivery.warning", job=claim.job_id, destination=box.name,
                                status=f"0x{status:04X}")
        elif is_transient(status):
            self._failed_attempt(store, claim, f"answered status 0x{status:04X}", status)
        else:
            self._refuse(store, claim, f"{box.name} answered status 0x{status:04X}", status)

    def _failed_attempt(self, store: Store, claim: Claim, what: str,
                        status: int | None = None) -> None:
        """An attempt at the object failed (`what` the destination did): retried after a
        backoff while the failed attempts before it are fewer than max_retries, else the
        delivery fails with how many attempts it had."""
        box = self.outbox
        if claim.refusals < box.dest.max_retries:
            store.retry_later(claim.job_id, box.name, status=status, error=what,
                              delay=self._delay(claim.attempts), failed=True)
            return
        n = claim.refusals + 1
        self._refuse(store, claim, f"{box.name} {what} ({n} attempt{'s' * (n != 1)}, "
                                   f"max_retries {box.dest.max_retries})", status)

    def _refuse(self, store: Store, claim: Claim, reason: str, status: int | None = None) -> None:
        """A permanent failure of this delivery; the job is quarantined once the other
        destinations have finished with it."""
        self._settle(claim.job_id, store.delivery_failed(
            claim.job_id, self.outbox.name, status=status, reason=reason))

    def _settle(self, job_id: str, outcome: str | None) -> None:
        """The files of a job whose last delivery just finished: gone once delivered, the
        original to quarantine when a destination refused it."""
        if outcome == DELIVERED:
            self.outbox.state.done(job_id)
        elif outcome == QUARANTINED:
            self.outbox.state.move_to_quarantine(job_id)

    def _lost(self, store: Store, claim: Claim, what: str, *, counted: bool = True) -> None:
        """The association went away with this object in hand: a failed attempt at it when
        `counted` (it was on the wire), else a connection failure."""
        self.outbox.log.warning("association.lost", destination=self.outbox.name, error=what)
        if self.assoc is not None:
            try:
                self.assoc.abort()
            except Exception:  # noqa: BLE001
                pass
            self.assoc = None
            self.contexts = set()
        if counted:
            self._failed_attempt(store, claim, what)
        else:
            store.retry_later(claim.job_id, self.outbox.name, error=what,
                              delay=self._delay(claim.attempts))


class Outbox:
    """All slots of one destination (run in a forwarder process, or a thread in tests)."""

    def __init__(self, name: str, dest: DestinationConfig, state: StateDir, *,
                 calling_ae: str, stop: Any, max_pdu: int = 0, batch: int = 16,
                 poll: float = 0.02, idle: float = 10.0, dimse_timeout: float = 120.0,
                 tls: ClientContext | None = None, times: StageRecorder | None = None) -> None:
        self.name, self.dest, self.state, self.tls = name, dest, state, tls
        self.dimse_timeout = dimse_timeout  # how long an object's C-STORE may go unanswered
        self.times = times  # the node's "send" stage histogram
        self.calling_ae, self.stop, self.max_pdu = calling_ae, stop, max_pdu
        self.batch, self.poll, self.idle = batch, poll, idle
        self.owner = f"fwd-{name}-{os.getpid()}"
        self.log = get_logger("gateway.forwarder")
        self.slots = [Slot(self, i) for i in range(max(1, dest.associations))]

    def outbox_pairs(self, store: Store) -> list[tuple[str, str]]:
        """(SOP class, transfer syntax) of everything waiting for this destination."""
        rows = store.conn.execute(
            "SELECT DISTINCT j.sop_class_uid, j.out_transfer_syntax FROM deliveries d "
            "JOIN jobs j ON j.id = d.job_id WHERE d.destination = ? AND d.state IN "
            "('pending', 'sending') AND j.state = 'forwarding' LIMIT 200",
            (self.name,)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def start(self) -> None:
        for slot in self.slots:
            slot.start()

    def join(self, timeout: float | None = None) -> None:
        for slot in self.slots:
            slot.join(timeout)

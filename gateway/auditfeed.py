"""The node's ATNA audit feed: association events as they happen, and every committed job move
(received, de-identified, quarantined, delivered, released, purged) read back from the audit
trail's event table, so that the commands run beside the node (`gantry quarantine release`,
`purge`) are audited by the node with the rest.

The feed keeps its place in the event table in `atna.cursor` in the state directory: a restart
goes on where it stopped, and a node that starts auditing does not replay the history.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gateway import atna
from gateway.config import Config
from gateway.logs import get_logger
from gateway.net.syslog import Collector, SyslogSender, tls_context
from gateway.store import (
    DELIVERED,
    PROCESSED,
    PURGED,
    QUARANTINED,
    RECEIVED,
    SENT,
    Store,
)

CURSOR = "atna.cursor"
BATCH = 500


def _path(config: Config, value: str | None) -> str | None:
    return None if value is None else str(config.base_dir / value)


class AuditFeed:
    """Builds the messages of one node and hands them to the syslog sender."""

    def __init__(self, config: Config, root: Path) -> None:
        audit = config.audit
        assert audit.syslog is not None
        collector = Collector.parse(audit.syslog)
        tls = None
        if collector.scheme == "tls":
            tls = tls_context(_path(config, audit.ca_certificates),
                              _path(config, audit.certificate), _path(config, audit.private_key))
        self.config = config
        self.node = atna.Node(config.network.ae_title, socket.gethostname(), os.getpid())
        self.sender = SyslogSender(collector, tls)
        self.cursor_file = root / CURSOR
        self.cursor: int | None = None
        self.log = get_logger("gateway.audit")
        self._open: set[int] = set()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ node and associations

    def started(self, store: Store) -> None:
        """The node starts: its place in the event table is fixed before it listens."""
        self.cursor = self._start_cursor(store)
        self.sender.send(atna.application_activity(self.node, True, time.time()))

    def stopped(self, store: Store) -> None:
        self.poll(store)
        self.sender.send(atna.application_activity(self.node, False, time.time()))
        self.sender.close()

    def _peer(self, event: Any) -> atna.Peer:
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title if assoc.requestor.primitive else ""
        return atna.Peer(str(calling).strip() or "(none)", assoc.requestor.address or None)

    def listen_to(self, receiver: Any) -> None:
        """Audit the associations of `receiver` (a started net.receiver.Receiver): every
        receiver process of a node binds its own, so each association is audited once, by the
        process that took it."""
        from pynetdicom import evt

        receiver.bind(evt.EVT_ESTABLISHED, self.on_established)
        receiver.bind(evt.EVT_RELEASED, self.on_ended)
        receiver.bind(evt.EVT_ABORTED, self.on_ended)
        receiver.bind(evt.EVT_REJECTED, self.on_rejected)

    def on_established(self, event: Any) -> None:
        with self._lock:
            self._open.add(id(event.assoc))
        self.sender.send(atna.association(self.node, self._peer(event), True, time.time()))

    def on_ended(self, event: Any) -> None:
        with self._lock:
            if id(event.assoc) not in self._open:
                return  # never established: its rejection, if any, was audited
            self._open.discard(id(event.assoc))
        self.sender.send(atna.association(self.node, self._peer(event), False, time.time()))

    def on_rejected(self, event: Any) -> None:
        self.sender.send(atna.rejected(self.node, self._peer(event),
                                       "association rejected", time.time()))

    # ------------------------------------------------------------------ job events

    def _start_cursor(self, store: Store) -> int:
        try:
            return int(self.cursor_file.read_text())
        except (OSError, ValueError):
            row = store.conn.execute("SELECT max(id) FROM events").fetchone()
            return int(row[0] or 0)

    def poll(self, store: Store) -> int:
        """Send the messages of the job events committed since the last poll; how many."""
        if self.cursor is None:
            self.cursor = self._start_cursor(store)
        rows = store.conn.execute(
            "SELECT e.id AS event, e.at, e.from_state, e.to_state, e.detail, j.id AS job, "
            "j.calling_ae, j.peer, j.sop_hash, j.sop_class_uid, j.new_study_uid, j.new_sop_uid, "
            "j.reason FROM events e JOIN jobs j ON j.id = e.job_id WHERE e.id > ? "
            "ORDER BY e.id LIMIT ?", (self.cursor, BATCH)).fetchall()
        sent = 0
        for row in rows:
            for message in self._messages(store, row):
                self.sender.send(message, row["at"])
                sent += 1
            self.cursor = row["event"]
        if rows:
            tmp = self.cursor_file.with_name(CURSOR + ".tmp")
            tmp.write_text(f"{self.cursor}\n")
            os.replace(tmp, self.cursor_file)
        return sent

    def _messages(self, store: Store, row: Any) -> list[bytes]:
        ref = atna.ObjectRef(row["job"], row["sop_hash"], row["sop_class_uid"],
                             row["new_study_uid"], row["new_sop_uid"])
        frm, to, at, node = row["from_state"], row["to_state"], row["at"], self.node
        if to == RECEIVED and frm is None:
            return [atna.received(node, atna.Peer(row["calling_ae"] or "(none)", row["peer"]),
                                  ref, at)]
        if to == RECEIVED and frm == QUARANTINED:
            return [atna.released(node, ref, at)]
        if to == PROCESSED:
            return [atna.deidentified(node, ref, at)]
        if to == QUARANTINED:
            return [atna.quarantined(node, ref, row["detail"] or row["reason"] or "", at)]
        if to == PURGED:
            return [atna.purged(node, ref, at)]
        if to == DELIVERED:
            out = []
            for d in store.deliveries(row["job"]):
                if d["state"] != SENT:
                    continue
                dest = self.config.destinations.get(d["destination"])
                peer = atna.Peer(dest.ae_title, dest.host) if dest else \
                    atna.Peer(d["destination"])
                out.append(atna.transferred(node, peer, ref, at))
            return out
        return []  # claims, reclaims, outbox queueing: not audit events

"""The safe reactor pause: once clear() returns, the reactor thread runs no further loop (so it
cannot take a C-STORE response off the queue before the sender does)."""

from __future__ import annotations

import random
import threading
import time

from gateway.net.reactor_pause import IDLE_POLL, ReactorCheckpoint, guard


class LoopLikePynetdicom(threading.Thread):
    """The shape of pynetdicom's `Association._run_reactor`: sleep, flag, wait, work."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.checkpoint: threading.Event = threading.Event()
        self.checkpoint.set()
        self.loops = 0
        self.stop = False
        self._is_paused = False

    def run(self) -> None:
        while not self.stop:
            time.sleep(0.001)
            self._is_paused = True
            self.checkpoint.wait()
            self._is_paused = False
            self.loops += 1  # here pynetdicom's reactor takes a message off the queue


def test_after_clear_the_reactor_runs_no_further_loop() -> None:
    reactor = LoopLikePynetdicom()
    reactor.checkpoint = ReactorCheckpoint(reactor)
    reactor.start()
    rng = random.Random(5)
    try:
        for _ in range(300):
            time.sleep(rng.uniform(0, 0.002))
            reactor.checkpoint.clear()
            assert reactor._is_paused
            before = reactor.loops
            time.sleep(0.003)  # three reactor sleeps: a loop in flight would show
            assert reactor.loops == before
            reactor.checkpoint.set()
    finally:
        reactor.stop = True
        reactor.checkpoint.set()
        reactor.join(5)


def test_clear_returns_when_the_reactor_has_ended() -> None:
    reactor = LoopLikePynetdicom()
    reactor.checkpoint = ReactorCheckpoint(reactor)
    reactor.start()
    reactor.stop = True
    reactor.join(5)
    t0 = time.monotonic()
    reactor.checkpoint.clear()
    assert time.monotonic() - t0 < 1


def test_guard_installs_on_a_pynetdicom_association_and_sends_still_work(tmp_path) -> None:
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian  # CT_small's own: sent as is or re-encoded
    from pynetdicom import AE, evt

    received = []
    scp = AE("PACS")
    scp.add_supported_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)
    server = scp.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda event: received.append(1) or 0x0000)])
    try:
        ae = AE("GANTRY")
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="PACS")
        assert assoc.is_established
        guard(assoc)
        assert isinstance(assoc._reactor_checkpoint, ReactorCheckpoint)
        for _ in range(5):
            assert assoc.send_c_store(get_testdata_file("CT_small.dcm")).Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    assert len(received) == 5


def test_the_reactor_clearing_its_own_checkpoint_does_not_wait() -> None:
    """pynetdicom's reactor calls release() itself on a network timeout (A-RELEASE mode)."""
    outcome: list[float] = []

    class SelfPausing(threading.Thread):
        def run(self) -> None:
            t0 = time.monotonic()
            self.checkpoint.clear()
            outcome.append(time.monotonic() - t0)

    reactor = SelfPausing(daemon=True)
    reactor.checkpoint = ReactorCheckpoint(reactor)
    reactor.start()
    reactor.join(10)
    assert outcome and outcome[0] < 1


def test_an_idle_reactor_slows_down_and_a_pdu_wakes_it() -> None:
    told: list[bool] = []
    reactor = LoopLikePynetdicom()
    reactor.checkpoint = ReactorCheckpoint(reactor, idle_after=0.05, on_idle=told.append)
    reactor.start()
    try:
        time.sleep(0.1)  # past idle_after: from here on it looks around every IDLE_POLL
        before = reactor.loops
        time.sleep(0.5)
        assert reactor.loops - before < 0.5 / IDLE_POLL + 5  # at full pace: hundreds
        assert told == [True]
        reactor.checkpoint.wake()  # what the receiver does for each PDU
        assert told == [True, False]
        reactor.checkpoint.clear()  # and the pause still parks it
        assert reactor._is_paused
        reactor.checkpoint.set()
        time.sleep(0.2)  # idle again; a sender's pause also brings it back to full pace
        reactor.checkpoint.clear()
        assert told == [True, False, True, False] and reactor._is_paused
        reactor.checkpoint.set()
    finally:
        reactor.stop = True
        reactor.checkpoint.set()
        reactor.join(5)
    assert not reactor.is_alive()

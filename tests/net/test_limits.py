"""What a newcomer trips on at the receiver: a called AE title nobody checks, and callers locked
out by connections that hold every slot. Real sockets, pynetdicom associations and dcmtk's
echoscu as the real caller (from another loopback address than the crowd)."""

from __future__ import annotations

import socket
import subprocess

import pytest
from nethelpers import DCMTK_ENV, need, wait_for
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from receivers import running_receiver

from gateway.net.server import REQUEST_TIMEOUT

CROWD = "127.0.0.2"  # the whole of 127/8 is loopback on Linux: a second peer address


def echoscu(port: int, called: str = "GANTRY") -> subprocess.CompletedProcess:
    return subprocess.run([need("echoscu"), "-aet", "MODALITY", "-aec", called, "127.0.0.1",
                           str(port)], env=DCMTK_ENV, capture_output=True, text=True,
                          timeout=60)


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other end has closed the connection (never waits)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_called_ae_title_other_than_the_nodes_is_rejected(tmp_path):
    with running_receiver(tmp_path, routes=[{"name": "r", "called_ae": ["GANTRY_R"]}]) as rx:
        for called in ("GANTRY", "GANTRY_R"):  # the node's title, and one a route selects on
            run = echoscu(rx.port, called)
            assert run.returncode == 0, run.stderr
        run = echoscu(rx.port, "SOMEONE_ELSE")
        assert run.returncode != 0
        assert "Called AE Title Not Recognized" in run.stderr


def test_a_promiscuous_site_accepts_any_called_ae_title(tmp_path):
    with running_receiver(tmp_path, accept_any_called_ae=True) as rx:
        run = echoscu(rx.port, "SOMEONE_ELSE")
        assert run.returncode == 0, run.stderr


def test_bare_connections_from_one_peer_do_not_lock_out_a_real_caller(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.net.receiver.REQUEST_TIMEOUT", 300)  # none ends by timeout
    with running_receiver(tmp_path) as rx:
        crowd = []
        try:
            for _ in range(100):
                sock = socket.socket()
                sock.bind((CROWD, 0))
                sock.connect(("127.0.0.1", rx.port))
                crowd.append(sock)
            run = echoscu(rx.port)  # accepted after the crowd (one accept queue)
            assert run.returncode == 0, run.stderr
            # The peer holds its cap (16 by default); the connections past it were closed.
            assert wait_for(lambda: sum(map(closed_by_peer, crowd)) == 84, 30)
            assert sum(not closed_by_peer(s) for s in crowd) == 16
        finally:
            for sock in crowd:
                sock.close()


def test_a_connection_that_never_asks_for_an_association_is_closed(tmp_path):
    with running_receiver(tmp_path) as rx, socket.create_connection(("127.0.0.1", rx.port)) as s:
        assert wait_for(lambda: closed_by_peer(s), REQUEST_TIMEOUT + 60)


def associate_from(peer: str, port: int):
    ae = AE(ae_title="CROWD")
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="GANTRY", bind_address=(peer, 0))


def test_idle_associations_from_one_peer_do_not_lock_out_a_real_caller(tmp_path):
    with running_receiver(tmp_path, max_associations_per_peer=8) as rx:
        held = []
        try:
            for _ in range(64):
                held.append(associate_from(CROWD, rx.port))
            assert sum(a.is_established for a in held) == 8
            run = echoscu(rx.port)
            assert run.returncode == 0, run.stderr
        finally:
            for assoc in held:
                assoc.release()


def test_the_association_limit_answers_local_limit_exceeded(tmp_path):
    with running_receiver(tmp_path, max_associations=2) as rx:
        held = [associate_from(CROWD, rx.port) for _ in range(2)]
        try:
            assert all(a.is_established for a in held)
            run = echoscu(rx.port)
            assert run.returncode != 0
            assert "Local Limit Exceeded" in run.stderr
        finally:
            for assoc in held:
                assoc.release()
        assert wait_for(lambda: echoscu(rx.port).returncode == 0, 30, 0.2)


@pytest.mark.parametrize("key", ["max_associations", "max_associations_per_peer"])
def test_limits_below_one_are_refused(key):
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=f"network: .*{key}"):
        parse_config({"network": {key: 0}}, "<test>")

"""Fixtures for the report tests: the gateway and a dcmtk PACS (defined in net/nethelpers.py)."""

from net.nethelpers import gateway, storescp  # noqa: F401

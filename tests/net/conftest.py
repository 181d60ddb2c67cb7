"""Fixtures for the network tests (defined in nethelpers.py)."""

from nethelpers import gateway, outboxes, storescp  # noqa: F401

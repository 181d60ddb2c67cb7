"""Fixtures for the network tests (defined in nethelpers.py)."""

from nethelpers import gateway, storescp  # noqa: F401

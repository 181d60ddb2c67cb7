"""Gantry's public Python API: a curation session over a dump of an archive.

    import gantry
    session = gantry.Session("dump.gantry")   # created 0600: it indexes identifiers
    session.ingest("/archive/dump")
    print(session.examine())
    session.load_config("gantry.yaml")
    print(session.verify())
    session.export("/research/out")

The engine lives in the `gateway` package; this module is its documented face.
"""

from gateway import __version__
from gateway.config import Config, ConfigError, load_config
from gateway.risk import RiskReport
from gateway.session import Session
from gateway.session.export import ExportSummary
from gateway.session.ingest import IngestSummary
from gateway.session.inventory import Inventory
from gateway.session.stage import Checkpoint, StagedFile

__all__ = ["Checkpoint", "Config", "ConfigError", "ExportSummary", "IngestSummary",
           "Inventory", "RiskReport", "Session", "StagedFile", "__version__", "load_config"]

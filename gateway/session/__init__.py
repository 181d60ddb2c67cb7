"""The curation session: an SQLite index of a dump, staged checkpoints, a resumable export."""

from gateway.session.core import Session

__all__ = ["Session"]

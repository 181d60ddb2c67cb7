"""Messages that may quote a value (pydicom's exceptions do) made safe for logs and reasons."""

from __future__ import annotations

import re

_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")
MAX_LENGTH = 300


def scrub_values(text: str) -> str:
    """`text` with every quoted value (possibly an identifier) replaced by <value>."""
    return _QUOTED.sub("<value>", text)[:MAX_LENGTH]


def safe_message(exc: BaseException) -> str:
    """An exception as 'Type: message', quoted values blanked out."""
    return scrub_values(f"{type(exc).__name__}: {exc}")

"""Groups of Value Representations (PS3.5 Table 6.2-1) that several stages need."""

from __future__ import annotations

# Values are character strings (any character set; ASCII in the common case).
STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC",
                        "UI", "UR", "UT"})
# Strings that may carry identifying words, which C (clean) scrubs.
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
# Free text: cleaned also when the table does not list it, inside D or C sequences.
FREE_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
# Values are bytes.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# Explicit VR encodes these with a 2-byte reserved field and a 4-byte length.
LONG_LENGTH_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR",
                             "UT", "UV"})

"""Shifting DA and DT values by whole days (Retain Longitudinal ... Modified Dates)."""

from __future__ import annotations

import datetime as dt


class DateFormatError(ValueError):
    """A DA/DT value that is not a date this module can shift."""


def _shift_da(value: str, days: int) -> str:
    value = value.strip()
    if not value:
        return value
    if len(value) == 10 and value[4] == "." and value[7] == ".":  # ACR-NEMA YYYY.MM.DD
        value = value.replace(".", "")
    try:
        day = dt.date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
    except (ValueError, IndexError):
        raise DateFormatError("not a YYYYMMDD date") from None
    if len(value) != 8:
        raise DateFormatError("not a YYYYMMDD date")
    return (day + dt.timedelta(days=days)).strftime("%Y%m%d")


def shift_da(value: str, days: int) -> str:
    """Shift a DA value (single date or a range `A-B`) by `days`."""
    if "-" in value:
        return "-".join(_shift_da(part, days) if part else part for part in value.split("-"))
    return _shift_da(value, days)


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value; time, fraction and offset are kept as they are."""
    value = value.strip()
    if not value:
        return value
    if len(value) < 8:  # YYYY or YYYYMM: too coarse to shift by days; keep the year only
        raise DateFormatError("DT value too coarse to shift")
    return _shift_da(value[:8], days) + value[8:]

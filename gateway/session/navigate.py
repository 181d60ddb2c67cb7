"""Patients → studies → series → instances of a session, read lazily from its index.

Each level is a small object with its key attributes and its children, queried when asked for;
no file is opened (`Instance.header()` reads one header, never the pixels). Instances are the
readable files kept by ingest: an identical duplicate is not a second instance. Reprs show
counts, never identifiers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from gateway.session.db import INSTANCES

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

T = TypeVar("T")
INSTANCE_COLUMNS = (
    "id, path, size, sop_instance_uid, sop_class_uid, transfer_syntax, modality, "
    "instance_number, rows, columns, frames, signature, burned_in, conflict, patient_id, "
    "study_uid, series_uid")


class Listing(Generic[T]):
    """A lazy, re-iterable list of one level: `len()`, iteration and indexing query the index."""

    def __init__(self, db: sqlite3.Connection, count_sql: str, sql: str, args: list[Any],
                 make: Callable[[tuple], T]) -> None:
        self._db, self._count, self._sql, self._args, self._make = db, count_sql, sql, args, make

    def __len__(self) -> int:
        return self._db.execute(self._count, self._args).fetchone()[0]

    def __iter__(self) -> Iterator[T]:
        for row in self._db.execute(self._sql, self._args).fetchall():
            yield self._make(row)

    def __getitem__(self, index: int) -> T:
        if index < 0:
            index += len(self)
        row = self._db.execute(f"{self._sql} LIMIT 1 OFFSET ?", [*self._args, index]).fetchone()
        if index < 0 or row is None:
            raise IndexError(index)
        return self._make(row)

    def __repr__(self) -> str:
        return f"<{len(self)} items>"


@dataclass(frozen=True)
class Instance:
    """One object (file) of the dump."""

    _db: Any
    id: int
    path: str
    size: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax: str
    modality: str
    instance_number: str
    rows: int | None
    columns: int | None
    frames: int | None
    signature: str
    burned_in: str
    conflict: bool
    _patient: str
    _study: str
    _series: str

    def header(self) -> Dataset:
        """The file's header (everything before the pixel data)."""
        from gateway.dicomio import read_header

        return read_header(self.path)

    @property
    def series(self) -> Series:
        return _series(self._db, self._patient, self._study, self._series)

    def __repr__(self) -> str:
        return f"Instance({self.modality or '-'}, {self.size} bytes)"


@dataclass(frozen=True)
class Series:
    """One series of one study."""

    _db: Any
    _patient: str
    _study: str
    series_uid: str
    series_number: str
    series_description: str
    modality: str
    count: int

    @property
    def instances(self) -> Listing[Instance]:
        where = f"{INSTANCES} AND patient_id = ? AND study_uid = ? AND series_uid = ?"
        return _instances(self._db, where, [self._patient, self._study, self.series_uid])

    def __repr__(self) -> str:
        return f"Series({self.modality or '-'}, {self.count} instances)"


@dataclass(frozen=True)
class Study:
    """One study of one patient."""

    _db: Any
    _patient: str
    study_uid: str
    study_date: str
    study_description: str
    accession_number: str
    count: int

    @property
    def series(self) -> Listing[Series]:
        return _series_listing(self._db, self._patient, self.study_uid)

    @property
    def instances(self) -> Listing[Instance]:
        where = f"{INSTANCES} AND patient_id = ? AND study_uid = ?"
        return _instances(self._db, where, [self._patient, self.study_uid])

    def __repr__(self) -> str:
        return f"Study({self.count} instances)"


@dataclass(frozen=True)
class Patient:
    """One patient (by Patient ID; an empty ID is one patient too)."""

    _db: Any
    patient_id: str
    patient_name: str
    count: int

    @property
    def studies(self) -> Listing[Study]:
        return _studies(self._db, f"{INSTANCES} AND patient_id = ?", [self.patient_id])

    @property
    def instances(self) -> Listing[Instance]:
        return _instances(self._db, f"{INSTANCES} AND patient_id = ?", [self.patient_id])

    def __repr__(self) -> str:
        return f"Patient({self.count} instances)"


def patients(db: sqlite3.Connection) -> Listing[Patient]:
    return Listing(db, f"SELECT count(DISTINCT patient_id) FROM files WHERE {INSTANCES}",
                   f"SELECT patient_id, max(patient_name), count(*) FROM files "
                   f"WHERE {INSTANCES} GROUP BY patient_id ORDER BY patient_id", [],
                   lambda r: Patient(db, *r))


def _studies(db: sqlite3.Connection, where: str, args: list[Any]) -> Listing[Study]:
    return Listing(db, f"SELECT count(*) FROM (SELECT DISTINCT patient_id, study_uid "
                       f"FROM files WHERE {where})",
                   f"SELECT patient_id, study_uid, max(study_date), max(study_description), "
                   f"max(accession_number), count(*) FROM files WHERE {where} "
                   f"GROUP BY patient_id, study_uid ORDER BY patient_id, study_uid", args,
                   lambda r: Study(db, *r))


def studies(db: sqlite3.Connection) -> Listing[Study]:
    return _studies(db, INSTANCES, [])


def _series_where(db: sqlite3.Connection, where: str, args: list[Any]) -> Listing[Series]:
    return Listing(db, f"SELECT count(*) FROM (SELECT DISTINCT patient_id, study_uid, "
                       f"series_uid FROM files WHERE {where})",
                   f"SELECT patient_id, study_uid, series_uid, max(series_number), "
                   f"max(series_description), max(modality), count(*) FROM files WHERE {where} "
                   f"GROUP BY patient_id, study_uid, series_uid "
                   f"ORDER BY patient_id, study_uid, series_uid", args,
                   lambda r: Series(db, *r))


def _series_listing(db: sqlite3.Connection, patient: str, study: str) -> Listing[Series]:
    return _series_where(db, f"{INSTANCES} AND patient_id = ? AND study_uid = ?",
                         [patient, study])


def _series(db: sqlite3.Connection, patient: str, study: str, series: str) -> Series:
    return _series_where(db, f"{INSTANCES} AND patient_id = ? AND study_uid = ? AND "
                             f"series_uid = ?", [patient, study, series])[0]


def series(db: sqlite3.Connection) -> Listing[Series]:
    return _series_where(db, INSTANCES, [])


def _instances(db: sqlite3.Connection, where: str, args: list[Any]) -> Listing[Instance]:
    def make(r: tuple) -> Instance:
        return Instance(db, *r[:13], bool(r[13]), *r[14:])

    return Listing(db, f"SELECT count(*) FROM files WHERE {where}",
                   f"SELECT {INSTANCE_COLUMNS} FROM files WHERE {where} ORDER BY path",
                   args, make)


def instances(db: sqlite3.Connection) -> Listing[Instance]:
    return _instances(db, INSTANCES, [])


DATAFRAME_COLUMNS = (
    "path", "size", "patient_id", "patient_name", "patient_birth_date", "patient_sex",
    "study_uid", "study_date", "study_description", "accession_number", "series_uid",
    "series_number", "series_description", "modality", "sop_class_uid", "sop_instance_uid",
    "instance_number", "transfer_syntax", "manufacturer", "model", "signature", "rows",
    "columns", "frames", "burned_in", "conflict")


def dataframe(db: sqlite3.Connection) -> Any:
    """The instances as a pandas DataFrame (pandas is the optional extra `gantry[pandas]`)."""
    try:
        import pandas
    except ImportError:
        raise ImportError("session.dataframe() needs pandas: "
                          "pip install 'gantry[pandas]'") from None
    rows = db.execute(f"SELECT {', '.join(DATAFRAME_COLUMNS)} FROM files WHERE {INSTANCES} "
                      f"ORDER BY path").fetchall()
    return pandas.DataFrame(rows, columns=list(DATAFRAME_COLUMNS))

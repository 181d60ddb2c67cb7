"""Machine signatures: which redaction rule covers a DICOM header.

A rule from the YAML (`redaction.rules`) has a `match` mapping; every key must hold (AND).
A key names an element: a DICOM keyword (`Manufacturer`), a tag (`(0008,1090)`, `0008,1090`,
`[0008,1090]`), or a chain into the first item of sequences (`SequenceOfUltrasoundRegions::
RegionLocationMinY0`). Group 0002 keys are read from the file meta information. An element's
value is compared as text (multiple values joined by a backslash); a missing element is ''.
The value of a key is one of:

    Manufacturer: GE MEDICAL SYSTEMS          text: the value equals it exactly
    Rows: 480                                 number: the value is numerically equal
    ManufacturerModelName: [LOGIQE9, LOGIQ9]  list: any item holds (items: text, number, mapping)
    ImageType: {icontains: SECONDARY}         mapping of tests, all must hold:
        equals / iequals            whole value, exact / case-insensitive
        contains / icontains        substring
        startswith / istartswith, endswith / iendswith
        regex                       re.search anywhere in the value
        matches                     the whole value matches (CTP's `matches`)
        lt / le / gt / ge           numeric comparison (non-numbers never match)
        present                     true: the element exists; false: it does not
        not                         a value (text, number, list or mapping) that must NOT hold

The special key `ctp` holds an expression in CTP's signature language (see `ctp_script`), ANDed
with the other keys: `ctp: 'Manufacturer.containsIgnoreCase("GE") + Modality.equals("US")'`.

Which rule wins: the first that matches, in this order — the YAML rules in file order, then the
signatures of each `ctp_scripts` file in the order the files are listed, each file top to bottom
(CTP's own rule). Put specific rules before general ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.deid.ctp_script import (
    METHODS,
    And,
    Expr,
    Signature,
    Term,
    element_text,
    parse_expression,
    resolve_identifier,
)
from gateway.deid.tags import parse_tag_key
from gateway.deid.validity import device_text

Region = tuple[int, int, int, int]
Test = Callable[[Dataset], bool]


def parse_path(key: str) -> tuple[int, ...]:
    """'Rows', '(0028,0010)', '[0028,0010]', 'Seq::Elem' → tuple of tags."""
    parts = key.split("::")
    path = []
    for part in parts:
        part = part.strip()
        try:
            path.append(resolve_identifier(part))
        except ValueError:
            path.append(parse_tag_key(part))  # raises ValueError naming the key
    return tuple(path)


def element_present(ds: Dataset, path: tuple[int, ...]) -> bool:
    """Whether the element at `path` exists (sequence chain → first items)."""
    current: Dataset = ds
    for i, tag in enumerate(path):
        source = current
        if i == 0 and tag >> 16 == 0x0002:
            source = getattr(ds, "file_meta", None) or Dataset()
        elem = source.get(tag)
        if elem is None:
            return False
        if i < len(path) - 1:
            if not isinstance(elem.value, Sequence) or not len(elem.value):
                return False
            current = elem.value[0]
    return True


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _num_test(op: Callable[[float, float], bool], arg: Any, key: str) -> Callable[[str], bool]:
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        raise ValueError(f"{key}: expected a number, got {type(arg).__name__}")

    def test(text: str) -> bool:
        value = _number(text)
        return value is not None and op(value, float(arg))

    return test


def _str_arg(arg: Any, key: str, op: str) -> str:
    if isinstance(arg, bool) or not isinstance(arg, str | int | float):
        raise ValueError(f"{key}.{op}: expected text, got {type(arg).__name__}")
    return str(arg)


# The YAML rule's text tests are CTP's methods under shorter names.
_TEXT_OPS: dict[str, Callable[[str, str], bool]] = {
    name: METHODS[method] for name, method in (
        ("equals", "equals"), ("iequals", "equalsIgnoreCase"),
        ("contains", "contains"), ("icontains", "containsIgnoreCase"),
        ("startswith", "startsWith"), ("istartswith", "startsWithIgnoreCase"),
        ("endswith", "endsWith"), ("iendswith", "endsWithIgnoreCase"))
}
_NUM_OPS: dict[str, Callable[[float, float], bool]] = {
    "lt": lambda v, a: v < a,
    "le": lambda v, a: v <= a,
    "gt": lambda v, a: v > a,
    "ge": lambda v, a: v >= a,
}
OPERATORS = (*_TEXT_OPS, "regex", "matches", *_NUM_OPS, "present", "not")


def _compile_value(spec: Any, path: tuple[int, ...], key: str) -> Test:
    """One key's value → a test on the dataset."""
    if isinstance(spec, bool):
        raise ValueError(f"{key}: true/false is not a value to compare; use {{present: ...}}")
    if isinstance(spec, int | float):
        number = float(spec)
        return lambda ds: _number(element_text(ds, path)) == number
    if isinstance(spec, str):
        return lambda ds: element_text(ds, path) == spec
    if isinstance(spec, list | tuple):
        if not spec:
            raise ValueError(f"{key}: an empty list matches nothing")
        tests = [_compile_value(item, path, key) for item in spec]
        return lambda ds: any(t(ds) for t in tests)
    if isinstance(spec, Mapping):
        if not spec:
            raise ValueError(f"{key}: an empty mapping has no test")
        tests = [_compile_op(str(op), arg, path, key) for op, arg in spec.items()]
        return lambda ds: all(t(ds) for t in tests)
    if spec is None:
        raise ValueError(f"{key}: no value given")
    raise ValueError(f"{key}: unsupported value of type {type(spec).__name__}")


def _compile_op(op: str, arg: Any, path: tuple[int, ...], key: str) -> Test:
    if op in _TEXT_OPS:
        fn, text = _TEXT_OPS[op], _str_arg(arg, key, op)
        return lambda ds: fn(element_text(ds, path), text)
    if op in ("regex", "matches"):
        try:
            pattern = re.compile(_str_arg(arg, key, op))
        except re.error as exc:
            raise ValueError(f"{key}.{op}: bad regular expression: {exc}") from None
        if op == "regex":
            return lambda ds: pattern.search(element_text(ds, path)) is not None
        return lambda ds: pattern.fullmatch(element_text(ds, path)) is not None
    if op in _NUM_OPS:
        num = _num_test(_NUM_OPS[op], arg, f"{key}.{op}")
        return lambda ds: num(element_text(ds, path))
    if op == "present":
        if not isinstance(arg, bool):
            raise ValueError(f"{key}.present: expected true or false")
        return lambda ds: element_present(ds, path) is arg
    if op == "not":
        inner = _compile_value(arg, path, f"{key}.not")
        return lambda ds: not inner(ds)
    raise ValueError(f"{key}: unknown test {op!r}; expected one of: {', '.join(OPERATORS)}")


def compile_match(match: Mapping[str, Any]) -> Test:
    """A rule's `match` mapping → a test; raises ValueError naming the key at fault."""
    if not match:
        raise ValueError("'match' is empty: a rule must name at least one condition")
    tests: list[Test] = []
    for key, spec in match.items():
        if key == "ctp":
            if not isinstance(spec, str):
                raise ValueError("ctp: expected an expression in CTP's signature language")
            try:
                expr = parse_expression(spec, "match.ctp")
            except ValueError as exc:
                raise ValueError(f"ctp: {exc}") from None
            tests.append(expr.evaluate)
            continue
        try:
            path = parse_path(str(key))
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
        tests.append(_compile_value(spec, path, str(key)))
    return lambda ds: all(t(ds) for t in tests)


def check_regions(regions: Iterable[Iterable[int]], where: str = "regions") -> tuple[Region, ...]:
    """Validate rectangles (x, y, width, height): width and height > 0."""
    out = []
    for i, region in enumerate(regions):
        values = tuple(region)
        if len(values) != 4 or not all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in values):
            raise ValueError(f"{where}[{i}]: expected [x, y, width, height] integers")
        if values[2] <= 0 or values[3] <= 0:
            raise ValueError(f"{where}[{i}]: width and height must be greater than 0")
        out.append(values)
    return tuple(out)  # type: ignore[return-value]


@dataclass(frozen=True)
class Rule:
    """A compiled redaction rule: a name, its rectangles, and its test on a header."""

    name: str
    regions: tuple[Region, ...]
    test: Test
    origin: str  # "config" or the path of a CTP script
    label: str = ""

    def matches(self, ds: Dataset) -> bool:
        return self.test(ds)


def rule_from_config(name: str, match: Mapping[str, Any], regions: Iterable) -> Rule:
    """A YAML rule → Rule; raises ValueError naming the rule and key at fault."""
    try:
        return Rule(name, check_regions(regions), compile_match(match), "config")
    except ValueError as exc:
        raise ValueError(f"rule {name!r}: {exc}") from None


def rule_from_signature(sig: Signature) -> Rule:
    """A CTP script entry → Rule (named 'script-file:line')."""
    return Rule(sig.name, sig.regions, sig.expr.evaluate, sig.source, sig.label)


def first_match(rules: Iterable[Rule], ds: Dataset) -> Rule | None:
    """The first rule that matches `ds` (see the module docstring for the order)."""
    for rule in rules:
        if rule.matches(ds):
            return rule
    return None


def machine_signature(ds: Dataset) -> str:
    """'Manufacturer / ManufacturerModelName' of the device that made the object (a value
    invalid for its VR, which may have swallowed the elements after it, is not shown)."""

    def text(keyword: str, missing: str) -> str:
        return device_text(ds, keyword) or missing

    maker = text("Manufacturer", "(no manufacturer)")
    return f"{maker} / {text('ManufacturerModelName', '(no model)')}"


# ---------------------------------------------------------------------------- CTP → YAML

_METHOD_TO_OP = {
    "equals": "equals",
    "equalsIgnoreCase": "iequals",
    "contains": "contains",
    "containsIgnoreCase": "icontains",
    "startsWith": "startswith",
    "startsWithIgnoreCase": "istartswith",
    "endsWith": "endswith",
    "endsWithIgnoreCase": "iendswith",
    "matches": "matches",
}


def _key_for(term: Term) -> str:
    parts = []
    for part in term.identifier.split("::"):
        m = re.fullmatch(r"\[\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\]", part)
        parts.append(f"({m.group(1).upper()},{m.group(2).upper()})" if m else part)
    return "::".join(parts)


def expr_to_match(expr: Expr) -> dict[str, Any]:
    """A CTP expression → an equivalent YAML `match` mapping.

    A conjunction of simple terms becomes one key per element; anything else (OR, NOT,
    literals, numeric comparisons, two tests of one kind on one element) is kept whole
    under the `ctp` key.
    """
    terms = expr.operands if isinstance(expr, And) else (expr,)
    match: dict[str, Any] = {}
    for term in terms:
        if not isinstance(term, Term) or term.method not in _METHOD_TO_OP:
            return {"ctp": str(expr)}
        key, op = _key_for(term), _METHOD_TO_OP[term.method]
        tests = match.setdefault(key, {})
        if op in tests:
            return {"ctp": str(expr)}
        tests[op] = term.arg
    return {k: (v["equals"] if list(v) == ["equals"] else v) for k, v in match.items()}

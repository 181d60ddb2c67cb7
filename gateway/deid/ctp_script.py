"""Parse CTP's DicomPixelAnonymizer.script language into signature expressions and regions.

A script is a sequence of entries; each entry is a signature in braces followed by one or more
regions in parentheses, and any other text is comment::

    { Manufacturer.containsIgnoreCase("GE MEDICAL") * Rows.equals("512") } (0,0,512,25)

Signature grammar (the CTP DICOM Filter language), by increasing precedence:

    expr    := and ("+" and)*                       OR
    and     := unary ("*" unary)*                   AND
    unary   := "!" unary | "(" expr ")" | term      NOT, grouping
    term    := "true." | "false." | path "." method "(" string ")"
    path    := ident ("::" ident)*                  first item of each sequence in the chain
    ident   := Keyword | "[" gggg "," eeee "]"      (eight hex digits)
    method  := equals | equalsIgnoreCase | matches | contains | containsIgnoreCase
             | startsWith | startsWithIgnoreCase | endsWith | endsWithIgnoreCase
             | isLessThan | isGreaterThan
    region  := "(" int "," int "," int "," int ")"  x, y, width, height (x/y may be negative)

Inside a signature, `//` starts a comment that runs to the end of the line.

An element's value is its text (multiple values joined by a backslash); a missing element is the
empty string. `matches` is a whole-value regular expression (Java `String.matches`). `isLessThan`
and `isGreaterThan` keep only digits and periods of both sides and compare them as numbers.
The first signature of a script that matches wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

Region = tuple[int, int, int, int]


class CtpScriptError(ValueError):
    """A syntax error in a script: names the source, the line and the problem."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source, self.line, self.problem = source, line, problem
        super().__init__(f"{source}: line {line}: {problem}")


# ---------------------------------------------------------------------------- element values

# dcm4che2 element names that differ from the standard DICOM keywords.
KEYWORD_ALIASES: dict[str, str] = {
    "SeqOfUltrasoundRegions": "SequenceOfUltrasoundRegions",
}


def resolve_identifier(name: str) -> int:
    """'Rows', '[0028,0010]' → tag int; raises ValueError naming the identifier."""
    match = re.fullmatch(r"\[\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\]", name)
    if match:
        return int(match.group(1) + match.group(2), 16)
    tag = tag_for_keyword(KEYWORD_ALIASES.get(name, name))
    if tag is None:
        raise ValueError(f"unknown element name {name!r}")
    return tag


def element_text(ds: Dataset, path: tuple[int, ...]) -> str:
    """The text of the element at `path` (sequence chain → first items); '' when missing.

    Group 0002 elements are looked up in `ds.file_meta`. Multiple values are joined by '\\'.
    """
    current: Dataset | None = ds
    for i, tag in enumerate(path):
        if current is None:
            return ""
        source = current
        if tag >> 16 == 0x0002 and i == 0:
            source = getattr(ds, "file_meta", None) or Dataset()
        elem = source.get(tag)
        if elem is None:
            return ""
        value = elem.value
        if i < len(path) - 1:
            current = value[0] if isinstance(value, Sequence) and len(value) else None
            continue
        return value_text(value)
    return ""  # pragma: no cover - empty path is rejected by the parser


def value_text(value: object) -> str:
    """An element value as CTP compares it: text, multiple values joined by a backslash."""
    if value is None or isinstance(value, Sequence):
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(value_text(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00 ")
    return str(value).strip()


# ---------------------------------------------------------------------------- expressions


def _numeric(text: str) -> float | None:
    kept = re.sub(r"[^0-9.]", "", text)
    try:
        return float(kept)
    except ValueError:
        return None


def _less(a: str, b: str) -> bool:
    x, y = _numeric(a), _numeric(b)
    return x is not None and y is not None and x < y


def _greater(a: str, b: str) -> bool:
    x, y = _numeric(a), _numeric(b)
    return x is not None and y is not None and x > y


METHODS: dict[str, Callable[[str, str], bool]] = {
    "equals": lambda v, a: v == a,
    "equalsIgnoreCase": lambda v, a: v.casefold() == a.casefold(),
    "matches": lambda v, a: re.fullmatch(a, v) is not None,
    "contains": lambda v, a: a in v,
    "containsIgnoreCase": lambda v, a: a.casefold() in v.casefold(),
    "startsWith": lambda v, a: v.startswith(a),
    "startsWithIgnoreCase": lambda v, a: v.casefold().startswith(a.casefold()),
    "endsWith": lambda v, a: v.endswith(a),
    "endsWithIgnoreCase": lambda v, a: v.casefold().endswith(a.casefold()),
    "isLessThan": _less,
    "isGreaterThan": _greater,
}


@dataclass(frozen=True)
class Term:
    """`path.method("arg")`: one condition on one element."""

    identifier: str  # as written, e.g. "Rows", "[0028,0010]", "Seq::Elem"
    path: tuple[int, ...]
    method: str
    arg: str

    def __post_init__(self) -> None:
        if self.method == "matches":
            re.compile(self.arg)

    def evaluate(self, ds: Dataset) -> bool:
        return METHODS[self.method](element_text(ds, self.path), self.arg)

    def __str__(self) -> str:
        escaped = self.arg.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.identifier}.{self.method}("{escaped}")'


@dataclass(frozen=True)
class Literal:
    value: bool

    def evaluate(self, ds: Dataset) -> bool:
        return self.value

    def __str__(self) -> str:
        return "true." if self.value else "false."


@dataclass(frozen=True)
class Not:
    operand: Expr

    def evaluate(self, ds: Dataset) -> bool:
        return not self.operand.evaluate(ds)

    def __str__(self) -> str:
        inner = str(self.operand)
        return f"!{inner}" if isinstance(self.operand, Term | Literal | Not) else f"!({inner})"


@dataclass(frozen=True)
class And:
    operands: tuple[Expr, ...]

    def evaluate(self, ds: Dataset) -> bool:
        return all(op.evaluate(ds) for op in self.operands)

    def __str__(self) -> str:
        return " * ".join(f"({op})" if isinstance(op, Or) else str(op) for op in self.operands)


@dataclass(frozen=True)
class Or:
    operands: tuple[Expr, ...]

    def evaluate(self, ds: Dataset) -> bool:
        return any(op.evaluate(ds) for op in self.operands)

    def __str__(self) -> str:
        return " + ".join(str(op) for op in self.operands)


Expr = Term | Literal | Not | And | Or


# ---------------------------------------------------------------------------- parsing

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<literal>(?:true|false)\.)
  | (?P<op>[!*+()])
  | (?P<term>(?:\[[^\]]*\]|[A-Za-z][A-Za-z0-9_]*)(?:::(?:\[[^\]]*\]|[A-Za-z][A-Za-z0-9_]*))*)
    \s*\.\s*(?P<method>[A-Za-z]+)\s*\(\s*(?P<arg>"(?:[^"\\]|\\.)*")\s*\)
    """,
    re.VERBOSE,
)


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


class _Parser:
    """Recursive descent over the tokens of one signature."""

    def __init__(self, text: str, source: str, line: int) -> None:
        self.source, self.line = source, line
        self.tokens: list[tuple[str, object, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            here = line + text.count("\n", 0, pos)
            if not m:
                snippet = text[pos:pos + 30].split("\n")[0]
                raise CtpScriptError(source, here, f"cannot parse signature at {snippet!r}")
            pos = m.end()
            if m.group("ws") or m.group("comment"):
                continue
            if m.group("literal"):
                self.tokens.append(("lit", m.group("literal") == "true.", here))
            elif m.group("op"):
                self.tokens.append((m.group("op"), None, here))
            elif m.group("term"):
                self.tokens.append(("term", self._term(m, here), here))
            else:
                raise CtpScriptError(source, here, "a string must follow a method name")
        self.pos = 0

    def _term(self, m: re.Match, line: int) -> Term:
        identifier, method = m.group("term"), m.group("method")
        if method not in METHODS:
            raise CtpScriptError(self.source, line, f"unknown method {method!r}")
        try:
            path = tuple(resolve_identifier(part) for part in identifier.split("::"))
        except ValueError as exc:
            raise CtpScriptError(self.source, line, str(exc)) from None
        for tag in path[:-1]:
            if _vr(tag) != "SQ":
                raise CtpScriptError(
                    self.source, line, f"{identifier}: only a sequence may be followed by '::'"
                )
        try:
            return Term(identifier, path, method, _unquote(m.group("arg")))
        except re.error as exc:
            raise CtpScriptError(self.source, line, f"bad regular expression: {exc}") from None

    def _peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def _line(self) -> int:
        if self.pos < len(self.tokens):
            return self.tokens[self.pos][2]
        return self.tokens[-1][2] if self.tokens else self.line

    def parse(self) -> Expr:
        if not self.tokens:
            raise CtpScriptError(self.source, self.line, "empty signature")
        expr = self._or()
        if self.pos != len(self.tokens):
            raise CtpScriptError(self.source, self._line(), f"unexpected {self._peek()!r}")
        return expr

    def _or(self) -> Expr:
        ops = [self._and()]
        while self._peek() == "+":
            self.pos += 1
            ops.append(self._and())
        return ops[0] if len(ops) == 1 else Or(tuple(ops))

    def _and(self) -> Expr:
        ops = [self._unary()]
        while self._peek() == "*":
            self.pos += 1
            ops.append(self._unary())
        return ops[0] if len(ops) == 1 else And(tuple(ops))

    def _unary(self) -> Expr:
        kind = self._peek()
        if kind is None:
            raise CtpScriptError(self.source, self._line(), "the signature ends too early")
        token = self.tokens[self.pos]
        self.pos += 1
        if kind == "!":
            return Not(self._unary())
        if kind == "(":
            inner = self._or()
            if self._peek() != ")":
                raise CtpScriptError(self.source, self._line(), "missing ')'")
            self.pos += 1
            return inner
        if kind == "lit":
            return Literal(bool(token[1]))
        if kind == "term":
            return token[1]  # type: ignore[return-value]
        raise CtpScriptError(self.source, token[2], f"unexpected {kind!r}")


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return ""


def parse_expression(text: str, source: str = "<expression>", line: int = 1) -> Expr:
    """Parse one signature expression (the text between the braces)."""
    return _Parser(text, source, line).parse()


@dataclass(frozen=True)
class Signature:
    """One script entry: the expression, its regions, where it was and the comment before it."""

    expr: Expr
    regions: tuple[Region, ...]
    source: str
    line: int
    label: str  # comment text just before the entry (e.g. "GE / Logiq US"), may be ""

    @property
    def name(self) -> str:
        return f"{Path(self.source).name}:{self.line}"

    def matches(self, ds: Dataset) -> bool:
        return self.expr.evaluate(ds)


_REGION_RE = re.compile(r"\(\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*,\s*(-?\d+)\s*\)")


def parse_script(text: str, source: str = "<script>") -> list[Signature]:
    """All entries of a script, in order; raises CtpScriptError naming the line of a fault."""
    signatures: list[Signature] = []
    pos = 0
    comment_start = 0
    last_label = ""
    while True:
        start = text.find("{", pos)
        if start < 0:
            break
        line = text.count("\n", 0, start) + 1
        end = text.find("}", start)
        if end < 0:
            raise CtpScriptError(source, line, "'{' without a closing '}'")
        nested = text.find("{", start + 1, end)
        if nested >= 0:
            raise CtpScriptError(source, text.count("\n", 0, nested) + 1, "'{' inside a signature")
        expr = parse_expression(text[start + 1:end], source, line)
        regions: list[Region] = []
        pos = end + 1
        while True:
            ws = re.match(r"\s*", text[pos:])
            after = pos + (ws.end() if ws else 0)
            if after >= len(text) or text[after] != "(":
                break
            m = _REGION_RE.match(text, after)
            if not m:
                raise CtpScriptError(
                    source, text.count("\n", 0, after) + 1,
                    "a region must be (x,y,width,height) with integers",
                )
            x, y, w, h = (int(g) for g in m.groups())
            if w <= 0 or h <= 0:
                raise CtpScriptError(
                    source, text.count("\n", 0, after) + 1,
                    "region width and height must be greater than 0",
                )
            regions.append((x, y, w, h))
            pos = m.end()
        if not regions:
            raise CtpScriptError(source, line, "a signature must be followed by a region")
        label = _label(text[comment_start:start]) or last_label
        last_label = label
        signatures.append(Signature(expr, tuple(regions), source, line, label))
        comment_start = pos
    stray = text.find("}", pos)
    if stray >= 0:
        raise CtpScriptError(source, text.count("\n", 0, stray) + 1, "'}' without '{'")
    return signatures


def _label(comment: str) -> str:
    lines = [ln.strip() for ln in comment.splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= set("*-=#")]
    return " / ".join(lines[-2:])[:120]


def load_script(path: str | Path) -> list[Signature]:
    """Read and parse a script file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CtpScriptError(str(path), 0, f"cannot read: {exc.strerror}") from None
    return parse_script(text, str(path))


def builtin_script_path() -> Path:
    """The CTP library shipped with Gantry (gateway/data/DicomPixelAnonymizer.script)."""
    return Path(__file__).resolve().parent.parent / "data" / "DicomPixelAnonymizer.script"


def first_match(signatures: list[Signature], ds: Dataset) -> Signature | None:
    """CTP's rule: the first signature that matches wins."""
    for sig in signatures:
        if sig.matches(ds):
            return sig
    return None

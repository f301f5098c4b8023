"""Weight formats by the names people type: llama.cpp types (Q4_K_M, IQ2_XS, Q8_0, ...),
``nf4``, ``fp8``, ``mxfp4``, and labels such as ``int4-g128``, ``w4a16-g128`` or ``w3g128``.

A name resolves to what the model needs: the method it implies, nominal weight bits, group
size, format kind (``results.w_kind``) and bits per weight. Names come from one table,
``data/formats.csv`` (documented in ``docs/formats.md``; every row has its source). Labels
are read by pattern:

* the collector's spellings (:func:`qbayes.formats.parse_format`): ``int4-g128``,
  ``int3-g64-asym``, ``fp8-g32``, ``nf4-g64``, ``mxint8``;
* ``wB[aA][-gG]`` and ``intB[-gG]`` with any of ``-``/``_``/nothing before the group:
  ``w4a16-g128``, ``w3g128``, ``w8a8``, ``int4_g128``. ``aA`` sets the activation bits.

A table name fixes its method (a GGUF type is llama.cpp's; nf4, fp8 and mxfp4 are rounded to
nearest); a label does not, and takes the query's method, RTN when it gives none. Grouped
integer labels leave bits per weight to the database's convention (one fp16 scale and one
b-bit zero per group, :func:`qbayes.model.table.effective_bits`); other grouped labels
count their scales as the collector does. Names are matched case- and punctuation-blind
(``q4_k_m``, ``Q4-K-M``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from qbayes.db.schema import METHODS, W_KINDS
from qbayes.errors import QBayesError, suggest
from qbayes.formats import parse_format
from qbayes.names import key, key_expr
from qbayes.resources import formats_csv, read_table

COLUMN = "format"  # the query column that names a format
COLUMNS = ("name", "aliases", "method", "w_kind", "w_bits", "group_size", "bits_per_weight", "source")
DEFAULT_METHOD = "RTN"  # a label's method when the query gives none
# the columns a format may leave to the query, and their value where the query gives none
# (None: bits per weight by the database's convention; 16: weight-only)
OPEN = {"method": DEFAULT_METHOD, "bits_per_weight": None, "act_bits": 16.0}
# the query columns a format fills
FIELDS = {
    "method": pl.String,
    "w_bits": pl.Float64,
    "group_size": pl.Int64,
    "w_kind": pl.String,
    "bits_per_weight": pl.Float64,
    "act_bits": pl.Float64,
}
# format kinds that are mixes, not uniform quantizers (Q3_K_M keeps some tensors at 4 or 5
# bits): a method whose formats are all of these kinds means nothing at a nominal bit width
# alone, so a query of it without a format name is resolved through the table or refused
MIX_KINDS = ("kquant",)
LABEL = re.compile(r"^(?:w(?P<w>\d+)(?:a(?P<a>\d+))?|int(?P<i>\d+))(?:[-_]?g(?P<g>\d+))?$")
LABEL_EXAMPLES = "int4-g128, w4a16-g128, w3g128, int8, nf4-g64, fp8-g32"


@dataclass(frozen=True)
class NamedFormat:
    """What a format name stands for. ``method`` None: the query's (RTN when it gives
    none); ``group_size`` None: one scale per output channel; ``bits_per_weight`` None: the
    database's convention from bits and group size; ``act_bits`` None: as the query says
    (16, weight-only, by default)."""

    name: str
    method: str | None
    w_kind: str
    w_bits: float
    group_size: int | None
    bits_per_weight: float | None
    act_bits: float | None = None
    source: str = ""

    def fields(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in FIELDS}


@dataclass(frozen=True)
class FormatTable:
    """The named formats of ``data/formats.csv``, by name (table order) and by the key
    (respell.key) of each name and alias."""

    formats: tuple[NamedFormat, ...]
    by_key: dict[str, NamedFormat]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.formats)

    def lookup(self, name: str) -> NamedFormat:
        """The format ``name`` stands for; raises QBayesError with the closest names."""
        text = str(name).strip()
        found = self.by_key.get(key(text)) or _label(text)
        if found is None:
            raise QBayesError(
                f"unknown format '{text}'{suggest(text, self.names, key=key)}; known: "
                f"{', '.join(self.names)}, or a label such as {LABEL_EXAMPLES} (docs/formats.md)"
            )
        return found


def _label(text: str) -> NamedFormat | None:
    """A format label read by pattern (see the module docstring), or None."""
    low = text.lower()
    try:
        f = parse_format(low)
    except QBayesError:
        m = LABEL.match(low)
        if m is None:
            return None
        bits = int(m["w"] or m["i"])
        return NamedFormat(
            name=low,
            method=None,
            w_kind="int",
            w_bits=float(bits),
            group_size=int(m["g"]) if m["g"] else None,
            bits_per_weight=None,
            act_bits=float(m["a"]) if m["a"] else None,
            source="label",
        )
    if f.kind == "int":
        bpw = None
    else:
        bpw = f.bits + f.overhead_bits(f.group_size) if f.group_size else None
    return NamedFormat(
        name=f.label,
        method=None,
        w_kind=f.kind,
        w_bits=float(f.bits),
        group_size=f.group_size,
        bits_per_weight=bpw,
        source="label",
    )


def _cell(value: str | None, cast, path: Path, row: int, column: str):
    if value is None or value.strip() == "":
        return None
    try:
        return cast(value)
    except ValueError:
        raise QBayesError(f"{path}: row {row}, column '{column}': '{value}' is not a {cast.__name__}") from None


@functools.cache
def load(path: Path | None = None) -> FormatTable:
    """Read and check the table (default: the shipped ``data/formats.csv``)."""
    path = Path(path) if path is not None else formats_csv()
    df = read_table(path, COLUMNS, what="the table of format names")
    formats, by_key, problems = [], {}, []
    for i, r in enumerate(df.iter_rows(named=True), start=2):
        f = NamedFormat(
            name=(r["name"] or "").strip(),
            method=_cell(r["method"], str, path, i, "method"),
            w_kind=(r["w_kind"] or "").strip(),
            w_bits=_cell(r["w_bits"], float, path, i, "w_bits"),
            group_size=_cell(r["group_size"], int, path, i, "group_size"),
            bits_per_weight=_cell(r["bits_per_weight"], float, path, i, "bits_per_weight"),
            source=(r["source"] or "").strip(),
        )
        if not f.name or not f.source or f.w_bits is None:
            problems.append(f"row {i}: name, w_bits and source are required")
        if f.method is not None and f.method not in METHODS:
            problems.append(f"row {i}: method '{f.method}' is not one of {', '.join(METHODS)}")
        if f.w_kind not in W_KINDS:
            problems.append(f"row {i}: w_kind '{f.w_kind}' is not one of {', '.join(W_KINDS)}")
        if f.bits_per_weight is not None and f.w_bits is not None and f.bits_per_weight < f.w_bits:
            problems.append(f"row {i}: bits_per_weight {f.bits_per_weight:g} is below w_bits {f.w_bits:g}")
        for spelling in [f.name, *(a.strip() for a in (r["aliases"] or "").split(";") if a.strip())]:
            k = key(spelling)
            if k in by_key:
                problems.append(f"row {i}: '{spelling}' is also '{by_key[k].name}' (case and punctuation ignored)")
            by_key[k] = f
        formats.append(f)
    if problems:
        raise QBayesError(f"{path}: " + "; ".join(problems))
    return FormatTable(formats=tuple(formats), by_key=by_key)


def table_names(values: pl.Series) -> pl.Series:
    """Each value's name in the table when it names one of its formats, by name or alias in
    any case or punctuation (``q4_k_m`` and ``Q4_K`` become ``Q4_K_M``); null for a label
    (``int4-g128``, read from its bits and group size alone) and for anything else. The
    model's ``format`` grouping (qbayes.model.spec) has these names as its levels."""
    table = load()
    names = {v: table.by_key[key(v)].name for v in values.drop_nulls().unique().to_list() if key(v) in table.by_key}
    return values.cast(pl.String).replace_strict(names, default=None, return_dtype=pl.String)


def lookup(name: str) -> NamedFormat:
    """The format ``name`` stands for, from the shipped table or a label."""
    return load().lookup(name)


def lookup_all(names: Iterable[str]) -> list[NamedFormat]:
    """Every name looked up; raises one QBayesError naming each unknown name."""
    out, problems = [], []
    for name in names:
        try:
            out.append(lookup(name))
        except QBayesError as exc:
            problems.append(str(exc))
    if problems:
        raise QBayesError("; ".join(problems))
    return out


def nominal_formats(method: str, w_bits: float, group_size: int | None) -> list[NamedFormat] | None:
    """The formats a nominal query of a mix method (:data:`MIX_KINDS`: ``llama.cpp-kquant``
    at 2 bits) may stand for: those of that method with those nominal bits (and that group
    size, where given). None when ``method`` is not a mix method, whose nominal bits are
    then read by the database's convention."""
    table = load()
    mine = [f for f in table.formats if f.method is not None and key(f.method) == key(str(method))]
    if not mine or any(f.w_kind not in MIX_KINDS for f in mine):
        return None
    return [f for f in mine if f.w_bits == w_bits and (group_size is None or f.group_size == group_size)]


def method_hints(methods: Iterable[str]) -> list[str]:
    """For each method that is really a format name (``--method Q4_K_M``, read as a method
    the fit never saw), a line saying to give it as a format."""
    table = load()
    out = []
    for m in dict.fromkeys(methods):
        f = table.by_key.get(key(str(m)))
        if f is not None:
            out.append(
                f"method '{m}' is the format {f.name} ({f.method or 'with a method of its own'}, "
                f"{f.bits_per_weight:g} bits per weight): give it as --format {f.name} (a 'format' column "
                f"in files) to be predicted as that, not as an unseen method"
            )
    return out


def expand(df: pl.DataFrame, where: str = "queries", *, defaults: Mapping[str, object] | None = None) -> pl.DataFrame:
    """Queries with a ``format`` column: on rows that name one, the format's own name
    (``q4_k_m`` and ``Q4_K`` become ``Q4_K_M``) and the columns the format
    fixes (method, w_bits, group_size, w_kind, bits_per_weight, act_bits) filled from it.
    A row's own value where the format leaves it open (a label's method, activation bits)
    is kept; a row whose own value contradicts its format is refused. Rows without a format
    keep their own values; in a column the queries lacked they get ``defaults[column]``
    (design.QUERY_OPTIONAL), else null."""
    if COLUMN not in df.columns:
        return df
    names = df.get_column(COLUMN).cast(pl.String).str.strip_chars().replace("", None)
    problems, resolved = [], {}
    for name in names.drop_nulls().unique(maintain_order=True).to_list():
        try:
            resolved[name] = lookup(name)
        except QBayesError as exc:
            rows = ((names == name).arg_true() + 1).head(5).to_list()
            problems.append(f"{exc} (rows {rows})")
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems))
    named = names.is_not_null()
    table = pl.DataFrame(
        {COLUMN: list(resolved), **{c: [f.fields()[c] for f in resolved.values()] for c in FIELDS}},
        schema={COLUMN: pl.String, **FIELDS},
    )
    stated = pl.DataFrame({COLUMN: names}).join(table, on=COLUMN, how="left", maintain_order="left")
    out = []
    for c, dtype in FIELDS.items():
        both = pl.DataFrame({"named": named, "stated": stated.get_column(c), "given": _given(df, c, dtype)})
        st, gv = pl.col("stated"), pl.col("given")
        if c in OPEN:  # a format may leave these to the query
            same = key_expr(gv) == key_expr(st) if dtype == pl.String else gv == st
            clash = st.is_not_null() & gv.is_not_null() & ~same
            value = pl.coalesce(st, gv, pl.lit(OPEN[c], dtype=dtype))
        else:
            clash = gv.is_not_null() & (gv != st).fill_null(True)
            value = st
        # rows without a format keep their own cell as written (query_table reads and checks
        # it), or get the default where the queries lack the column
        if c in df.columns and df.schema[c] == pl.String:
            both = both.with_columns(df.get_column(c).alias("own"))
            value = value.cast(pl.String)
        elif c in df.columns:
            both = both.with_columns(df.get_column(c).cast(dtype, strict=False).alias("own"))
        else:
            both = both.with_columns(pl.lit((defaults or {}).get(c), dtype=dtype).alias("own"))
        both = both.with_columns(
            (pl.col("named") & clash).alias("clash"), pl.when("named").then(value).otherwise(pl.col("own")).alias(c)
        )
        for name in names.filter(both["clash"]).unique(maintain_order=True).to_list():
            rows = ((names == name) & both["clash"]).arg_true()
            first = int(rows[0])
            problems.append(
                f"{c} {both['given'][first]} contradicts format '{name}', whose {c} is "
                f"{_shown(both['stated'][first])} (rows {(rows + 1).head(5).to_list()}); "
                f"leave {c} empty where a format is given"
            )
        out.append(both.get_column(c))
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems))
    canonical = names.replace_strict({n: f.name for n, f in resolved.items()}, default=None, return_dtype=pl.String)
    return df.with_columns(canonical.alias(COLUMN), *out)


def _given(df: pl.DataFrame, column: str, dtype: pl.DataType) -> pl.Series:
    """The query's own values of ``column`` as ``dtype`` (null where absent or empty;
    group size -1, per channel, as null)."""
    if column not in df.columns:
        return pl.Series(column, [None] * df.height, dtype=dtype)
    s = df.get_column(column)
    if s.dtype == pl.String:
        s = s.str.strip_chars().replace("", None)
    s = s.cast(dtype, strict=False)
    return s.replace(-1, None) if column == "group_size" else s


def _shown(value) -> str:
    if value is None:
        return "per channel"
    return f"{value:g}" if isinstance(value, float) else str(value)

"""What a fit learned about its data's categories (:class:`Encoding`): the levels of each
grouping, the models with latent training tokens, feature scales, block designs and
training tokens of the families it saw or knows. Saved in the fit file, so a prediction
reads a query exactly as the fit read its training rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from qbayes.errors import QBayesError
from qbayes.model.features import scales
from qbayes.model.known_families import KnownFamilies
from qbayes.model.respell import respell
from qbayes.model.spec import GROUPINGS, INTERACTIONS
from qbayes.model.table import LOG_D_REF, STANDARD
from qbayes.names import key_expr


def family_mean_tokens(df: pl.DataFrame) -> dict[str, float]:
    """Family -> the geometric mean of its known token counts (families with none left out)."""
    fam = df.group_by("family").agg(pl.col("train_tokens_b").log().mean().exp()).drop_nulls().sort("family")
    return dict(zip(fam["family"].to_list(), fam["train_tokens_b"].to_list()))


def family_mean_vocab(df: pl.DataFrame) -> dict[str, float]:
    """Family -> the geometric mean of its models' vocabulary sizes (families with none left
    out); a family's models share one tokenizer, so this is its vocabulary."""
    if "vocab_size" not in df.columns:
        return {}
    fam = df.group_by("family").agg(pl.col("vocab_size").log().mean().exp()).drop_nulls().sort("family")
    return dict(zip(fam["family"].to_list(), fam["vocab_size"].to_list()))


def family_tokens(df: pl.DataFrame) -> pl.DataFrame:
    """Replace each row's training tokens by the geometric mean of its family's known
    token counts (rows whose family has none stay null, to be imputed)."""
    return df.with_columns(
        pl.col("family")
        .replace_strict(family_mean_tokens(df), default=None, return_dtype=pl.Float64)
        .alias("train_tokens_b")
    )


def tokens_centre(df: pl.DataFrame, level: pl.Series) -> dict[str, float]:
    """Per level of a grouping of families, the mean over its families (each counted once)
    of the family's mean ln(D / 1T); levels whose families all lack D are left out."""
    fams = (
        pl.DataFrame({"level": level, "family": df["family"], "ld": df["train_tokens_b"].log() - LOG_D_REF})
        .drop_nulls()
        .group_by("level", "family")
        .agg(pl.col("ld").mean())
        .group_by("level")
        .agg(pl.col("ld").mean())
    )
    return dict(zip(fams["level"].to_list(), fams["ld"].to_list()))


CELL_COLUMNS = ("family", "method", "w_bits", "act_bits", "group_size")  # what a row's cell is read from
DERIVED = ("cell", "setting", "model_cell")  # groupings whose levels are read through cell_keys


def cell_keys(df: pl.DataFrame) -> pl.DataFrame:
    """Each row's cell: family, method, bits ("3", "4.5", or "4a8" where activations are
    quantized) and grouping ("g128" or "per-channel") labels, in row order."""

    def num(x: pl.Expr) -> pl.Expr:
        # 3.0 -> "3", 4.5 -> "4.5"
        return x.round(2).cast(pl.String).str.replace(r"\.0$", "")

    act = pl.col("act_bits").fill_null(16.0)
    bits = pl.when(act < 16).then(num(pl.col("w_bits")) + "a" + num(act)).otherwise(num(pl.col("w_bits")))
    group = pl.col("group_size")
    grouping = pl.when(group.is_null()).then(pl.lit("per-channel")).otherwise("g" + group.cast(pl.String))
    return df.select(
        pl.col("family").fill_null("?"),
        pl.col("method").fill_null("?"),
        bits.fill_null("?").alias("bits"),
        grouping.alias("grouping"),
    )


def grouping_values(df: pl.DataFrame, g: str) -> pl.Series:
    """Each row's level of grouping ``g``: a column's value, or for an interaction the
    parts joined by "|" (null where a part is missing, or where the table lacks them); a
    ``cell`` is the row's family, method, bits and grouping (:func:`cell_keys`), a ``setting``
    the same without the family (a method's configuration, shared by every family), a
    ``model_cell`` the same with the model in place of the family."""
    parts = CELL_COLUMNS if g in DERIVED else INTERACTIONS.get(g, (g,))
    if g == "model_cell":
        parts = (*parts, "model")
    if not all(c in df.columns for c in parts):
        return pl.Series(g, [None] * df.height, dtype=pl.String)
    if g in DERIVED:
        keys = cell_keys(df)
        if g == "setting":
            keys = keys.drop("family")
        elif g == "model_cell":
            keys = keys.with_columns(df.get_column("model").fill_null("?").alias("family"))
        return keys.select(pl.concat_str(pl.all(), separator="|").alias(g)).to_series()
    return df.select(pl.concat_str(list(parts), separator="|").alias(g)).to_series()


def level_index(values: pl.Series, levels: tuple[str, ...]) -> np.ndarray:
    """Position of each value in ``levels``; -1 for a value not among them (or null)."""
    lookup = {name: i for i, name in enumerate(levels)}
    return values.replace_strict(lookup, default=-1, return_dtype=pl.Int64).fill_null(-1).to_numpy(writable=True)


def unseen_ids(values: pl.Series, idx: np.ndarray) -> np.ndarray:
    """For rows whose level is unseen (``idx`` -1), 0, 1, ... per distinct value in order of
    first appearance (all nulls share one); -1 for rows of seen levels."""
    unseen = idx < 0
    out = np.full(len(idx), -1, dtype=np.int64)
    if unseen.any():
        vals = values.filter(pl.Series(unseen)).fill_null("\x00null")
        order = {v: i for i, v in enumerate(vals.unique(maintain_order=True).to_list())}
        out[unseen] = vals.replace_strict(order, return_dtype=pl.Int64).to_numpy()
    return out


def nesting(child: pl.Series, parent: pl.Series, g: str, p: str) -> tuple[str, ...]:
    """The parent level of each level of ``child`` (sorted as in :class:`Encoding`);
    raises when a level occurs under more than one parent or under none."""
    pairs = (
        pl.DataFrame({"c": child, "p": parent})
        .drop_nulls("c")
        .group_by("c")
        .agg(pl.col("p").drop_nulls().unique().sort())
        .sort("c")
    )
    for level, ps in zip(pairs["c"].to_list(), pairs["p"].to_list()):
        if len(ps) != 1:
            where = f"under {', '.join(ps)}" if ps else f"with no {p}"
            raise QBayesError(
                f"grouping '{g}' is not nested in '{p}': level '{level}' occurs {where}; "
                f"drop 'within' from the spec or fix the data"
            )
    return tuple(ps[0] for ps in pairs["p"].to_list())


@dataclass(frozen=True)
class Encoding:
    """What a fit learned about its data's categories: level lists per grouping and the
    models whose training tokens were missing (each has a latent ln D)."""

    levels: dict[str, tuple[str, ...]]
    tokens_missing: tuple[str, ...]
    features: dict[str, tuple[float, float]] = field(default_factory=dict)  # covariate -> (mean, sd)
    family_arch: dict[str, str] = field(default_factory=dict)  # block design of each family seen
    # per grouping, the levels seen only with one scale per channel: their per-channel
    # effect is measured from that mode (see :func:`encode`)
    per_channel_only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # for a nested grouping (spec ``within``), its parent grouping, and the parent level of
    # each of its levels
    within: dict[str, str] = field(default_factory=dict)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # spec ``tokens_within``: the grouping, and per level the mean over its families of
    # ln(D / 1T), which each row's ln D is measured from (see :func:`encode`)
    tokens_within: str | None = None
    tokens_centre: dict[str, float] = field(default_factory=dict)
    # training tokens (billions) of each family seen with known tokens: the geometric mean
    # over its rows, a query's count when it gives none
    family_tokens_seen: dict[str, float] = field(default_factory=dict)
    # block designs and training tokens of families the data may not hold, by respell.key
    # (known_families.load()): a query's when neither it nor the fit gives one
    known_designs: dict[str, str] = field(default_factory=dict)
    known_tokens: dict[str, float] = field(default_factory=dict)
    # vocabulary sizes of the families seen (family_mean_vocab) and known (by respell.key):
    # a query's when it gives none; the known ones are also the population of ln V that a
    # family known to neither draws from (model.collapse)
    family_vocab_seen: dict[str, float] = field(default_factory=dict)
    known_vocab: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_table(
        cls,
        df: pl.DataFrame,
        features: tuple[str, ...] = (),
        within: dict[str, str] | None = None,
        tokens_within: str | None = None,
        known: KnownFamilies | None = None,
        groupings: tuple[str, ...] = GROUPINGS,
        min_rows: dict[str, int] | None = None,
        min_families: dict[str, int] | None = None,
    ) -> Encoding:
        """``within`` maps a nested grouping to its parent grouping, ``tokens_within`` names
        the grouping whose families' mean ln D each row's ln D is centred on, ``groupings`` the
        groupings to encode, ``min_rows`` the rows a level of a grouping needs to be one (fewer:
        its rows read as an unseen level) and ``min_families`` the families it must be seen in
        (likewise) (all from the spec: ModelSpec.groupings, .min_rows, .min_families);
        ``known`` is known_families.load(). Rows without training tokens get their
        family's from the table of known families, as in :func:`encode`; the models left
        without any each get a latent ln D."""
        known_designs, known_tokens = (known.designs, known.tokens) if known else ({}, {})
        known_vocab = known.vocab if known else {}
        fam_tokens = family_mean_tokens(df)
        df = cls(levels={}, tokens_missing=(), family_tokens_seen=fam_tokens, known_tokens=known_tokens).fill(
            df, "train_tokens_b"
        )
        values = {g: grouping_values(df, g) for g in groupings}
        min_rows, min_families = min_rows or {}, min_families or {}
        for g in set(min_rows) | set(min_families):
            seen = (
                pl.DataFrame({"level": values[g], "family": df["family"]})
                .drop_nulls("level")
                .group_by("level")
                .agg(pl.len().alias("rows"), pl.col("family").n_unique().alias("families"))
                .filter((pl.col("rows") >= min_rows.get(g, 0)) & (pl.col("families") >= min_families.get(g, 0)))
            )
            values[g] = values[g].set(~values[g].is_in(seen["level"].to_list()).fill_null(False), None)
        levels = {g: tuple(sorted(v.drop_nulls().unique().to_list())) for g, v in values.items()}
        missing = tuple(sorted(set(df.filter(pl.col("train_tokens_b").is_null())["model"])))
        arch = df.select("family", "arch").drop_nulls().unique().sort("family")
        pc = df.get_column("group_size").is_null()
        pc_only = {}
        for g, v in values.items():
            modes = pl.DataFrame({"level": v, "pc": pc}).drop_nulls("level").group_by("level").agg(pl.col("pc").all())
            pc_only[g] = tuple(sorted(modes.filter(pl.col("pc"))["level"].to_list()))
        parents = {g: nesting(values[g], values[p], g, p) for g, p in (within or {}).items()}
        centre = {} if tokens_within is None else tokens_centre(df, values[tokens_within])
        return cls(
            levels=levels,
            tokens_missing=missing,
            features=scales(df, features),
            family_arch=dict(zip(arch["family"].to_list(), arch["arch"].to_list())),
            per_channel_only=pc_only,
            within=dict(within or {}),
            parents=parents,
            tokens_within=tokens_within,
            tokens_centre=centre,
            family_tokens_seen=fam_tokens,
            known_designs=dict(known_designs),
            known_tokens=dict(known_tokens),
            family_vocab_seen=family_mean_vocab(df),
            known_vocab=dict(known_vocab),
        )

    def to_dict(self) -> dict:
        return {
            "levels": {k: list(v) for k, v in self.levels.items()},
            "tokens_missing": list(self.tokens_missing),
            "features": {k: list(v) for k, v in self.features.items()},
            "family_arch": dict(self.family_arch),
            "per_channel_only": {k: list(v) for k, v in self.per_channel_only.items()},
            "within": dict(self.within),
            "parents": {k: list(v) for k, v in self.parents.items()},
            "tokens_within": self.tokens_within,
            "tokens_centre": dict(self.tokens_centre),
            "family_tokens_seen": dict(self.family_tokens_seen),
            "known_designs": dict(self.known_designs),
            "known_tokens": dict(self.known_tokens),
            "family_vocab_seen": dict(self.family_vocab_seen),
            "known_vocab": dict(self.known_vocab),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Encoding:
        return cls(
            levels={k: tuple(v) for k, v in d["levels"].items()},
            tokens_missing=tuple(d["tokens_missing"]),
            features={k: (float(v[0]), float(v[1])) for k, v in d.get("features", {}).items()},
            family_arch=dict(d.get("family_arch", {})),
            per_channel_only={k: tuple(v) for k, v in d.get("per_channel_only", {}).items()},
            within=dict(d.get("within", {})),
            parents={k: tuple(v) for k, v in d.get("parents", {}).items()},
            tokens_within=d.get("tokens_within"),
            tokens_centre={k: float(v) for k, v in d.get("tokens_centre", {}).items()},
            family_tokens_seen={k: float(v) for k, v in d.get("family_tokens_seen", {}).items()},
            known_designs=dict(d.get("known_designs", {})),
            known_tokens={k: float(v) for k, v in d.get("known_tokens", {}).items()},
            family_vocab_seen={k: float(v) for k, v in d.get("family_vocab_seen", {}).items()},
            known_vocab={k: float(v) for k, v in d.get("known_vocab", {}).items()},
        )

    def _sources(self, column: str) -> dict[str, pl.Expr]:
        """Where a row's block design (``column`` "arch"), training tokens
        ("train_tokens_b") or vocabulary size ("vocab_size") can come from, first choice first."""
        family, dtype = pl.col("family"), STANDARD[column]
        if column == "arch":
            query, fit, known = (
                pl.col("arch").str.to_lowercase().str.replace_all(r"\s", "").replace("", None),
                self.family_arch,
                self.known_designs,
            )
        elif column == "vocab_size":
            query, fit, known = pl.col(column), self.family_vocab_seen, self.known_vocab
        else:
            query, fit, known = pl.col(column), self.family_tokens_seen, self.known_tokens
        return {
            "query": query,
            "fit": family.replace_strict(fit, default=None, return_dtype=dtype),
            "known_families": key_expr(family).replace_strict(known, default=None, return_dtype=dtype),
        }

    def fill(self, df: pl.DataFrame, column: str) -> pl.DataFrame:
        """Rows without a block design (``column`` "arch") or training tokens
        ("train_tokens_b") get their family's: as the fit saw it, else from the table of known
        families (known_families), else none (a new design; a latent or population ln D)."""
        return df.with_columns(pl.coalesce(*self._sources(column).values()).alias(column))

    def source(self, df: pl.DataFrame, column: str) -> pl.Series:
        """Per row, where :meth:`fill` takes ``column`` from ("query", "fit",
        "known_families"), null where it has none."""
        expr = pl.lit(None, dtype=pl.String)
        for name, src in reversed(self._sources(column).items()):
            expr = pl.when(src.is_not_null()).then(pl.lit(name)).otherwise(expr)
        return df.select(expr.alias(f"{column}_source")).to_series()

    def read(self, table: pl.DataFrame) -> ReadTable:
        """A standard table as this fit reads it: values the fit knows under another
        spelling respelled to its levels (:func:`respell`), then block design, training
        tokens and vocabulary size filled from the family where a row lacks them (:meth:`fill`)."""
        spelled, respelled = respell(table, self.levels)
        sources = pl.DataFrame(
            {
                "block_design_from": self.source(spelled, "arch"),
                "train_tokens_from": self.source(spelled, "train_tokens_b"),
            }
        )
        filled = self.fill(self.fill(spelled, "train_tokens_b"), "arch")
        if "vocab_size" in filled.columns:  # fits' training rows saved before the column lack it
            filled = self.fill(filled, "vocab_size")
        return ReadTable(table=filled, respelled=tuple(respelled), sources=sources, encoding=self)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.features)


@dataclass(frozen=True)
class ReadTable:
    """A standard table as a fit reads it (:meth:`Encoding.read`): ``table`` respelled and
    filled; ``respelled`` the (column, value, level) replacements made; ``sources`` per row
    where its block design and training tokens came from ("query", "fit",
    "known_families", null where none)."""

    table: pl.DataFrame
    respelled: tuple[tuple[str, str, str], ...]
    sources: pl.DataFrame
    encoding: Encoding

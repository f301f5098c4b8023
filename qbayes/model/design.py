"""From database rows or prediction queries to model covariates.

Training rows and queries are first normalised into one *standard table* (one column
per quantity the model uses), then :func:`encode` turns a standard table into centred
covariates and integer level indexes. Fit and predict go through the same ``encode``,
so they cannot disagree on a covariate. Unseen levels get index -1 and are flagged.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from qbayes.db.schema import BASELINE_METHOD
from qbayes.db.store import Database
from qbayes.errors import QBayesError
from qbayes.model.covariates import RAW_COLUMNS, attach_raw, scales, standardise
from qbayes.model.respell import key_expr, respell
from qbayes.model.spec import GROUPINGS, INTERACTIONS
from qbayes.named_formats import expand as expand_formats

if TYPE_CHECKING:
    from qbayes.model.known_families import KnownFamilies

BITS_REF = 4.0  # covariates are centred here, so intercepts are 4-bit values
LOG_N_REF = math.log(7.0)  # 7B parameters
LOG_D_REF = math.log(1000.0)  # 1T training tokens
GROUP_REF = 128

STANDARD = {
    "family": pl.String, "arch": pl.String, "model": pl.String, "params_b": pl.Float64, "train_tokens_b": pl.Float64,
    "method": pl.String, "w_kind": pl.String, "w_bits": pl.Float64, "group_size": pl.Int64,
    "bits": pl.Float64, "act_bits": pl.Float64, "eval_set": pl.String, "source": pl.String,
    "fp16_ppl": pl.Float64,
    **{c: pl.Float64 for c in RAW_COLUMNS},  # measured features (null for published rows)
}
PUBLISHED_KINDS = ("paper", "repository")  # results.source_kind of published rows


def effective_bits(w_bits: pl.Expr, group_size: pl.Expr, w_kind: pl.Expr) -> pl.Expr:
    """Bits per weight with one fp16 scale and one b-bit zero per group (the database's
    convention for grouped integer formats); per-channel and other kinds: nominal bits."""
    grouped = group_size.is_not_null() & w_kind.is_in(["int"])
    return pl.when(grouped).then(w_bits + (16.0 + w_bits) / group_size).otherwise(w_bits)


def training_table(db: Database, *, exclude_families=(), include_suspect: bool = False,
                   rows: str = "all") -> pl.DataFrame:
    """Quantized rows joined to their baseline: the standard table plus ``delta``, the
    degradation ln(ppl_q) - ln(ppl_base) in nats per token. ``rows`` keeps the published
    rows, the collected ones, or all (see :data:`qbayes.model.spec.ROWS`)."""
    res = db.results
    if rows != "all":
        published = pl.col("source_kind").is_in(list(PUBLISHED_KINDS))
        res = res.filter(published if rows == "published" else ~published)
    if not include_suspect:
        res = res.filter(pl.col("doubt").is_null() | (pl.col("doubt") != "suspect"))
    quant = with_baseline(res)
    models = db.models.select("model", "family", "params_b", "train_tokens_b", arch_expr(db.models).alias("arch"))
    df = quant.join(models, on="model", how="inner")
    if exclude_families:
        unknown_fams = set(exclude_families) - set(df["family"])
        if unknown_fams:
            from qbayes.errors import unknown

            raise unknown("family", sorted(unknown_fams)[0], sorted(set(df["family"])))
        df = df.filter(~pl.col("family").is_in(list(exclude_families)))
    df = df.with_columns(
        pl.coalesce("w_bits_eff", "w_bits").alias("bits"),
        (pl.col("ppl").log() - pl.col("fp16_ppl").log()).alias("delta"),
    )
    df = attach_raw(df, db.features)
    return df.select(*[pl.col(c).cast(t) for c, t in STANDARD.items()], "delta", "doubt")


# spellings of one block design: the zoo's card says gated-silu where papers say SwiGLU
_MLP_NAMES = {"gated-silu": "swiglu", "gelu_new": "gelu"}


def arch_expr(models: pl.DataFrame) -> pl.Expr:
    """A model's block design, "norm+mlp" in lower case (e.g. "rmsnorm+swiglu" for
    LLaMA-style blocks, "layernorm+relu" for OPT); null where either is unknown. Families
    that share a design share its effect, so a new LLaMA-style family starts from what
    LLaMA-style families did rather than from the average of all designs."""
    if not {"norm", "mlp"} <= set(models.columns):
        return pl.lit(None, dtype=pl.String)
    mlp = pl.col("mlp").str.to_lowercase().str.strip_chars().replace(_MLP_NAMES)
    return pl.concat_str([pl.col("norm").str.to_lowercase().str.strip_chars(), mlp], separator="+")


def with_baseline(res: pl.DataFrame) -> pl.DataFrame:
    """The quantized rows of ``res`` with ``fp16_ppl``, the unquantized perplexity of the
    same model, evaluation set and source; rows without one are dropped."""
    key = ["model", "eval_set", "source", "source_table"]
    base = (res.filter(pl.col("method") == BASELINE_METHOD)
            .group_by(key).agg(pl.col("ppl").first().alias("fp16_ppl")))
    return res.filter(pl.col("method") != BASELINE_METHOD).join(base, on=key, how="inner", nulls_equal=True)


def family_mean_tokens(df: pl.DataFrame) -> dict[str, float]:
    """Family -> the geometric mean of its known token counts (families with none left out)."""
    fam = df.group_by("family").agg(pl.col("train_tokens_b").log().mean().exp()).drop_nulls().sort("family")
    return dict(zip(fam["family"].to_list(), fam["train_tokens_b"].to_list()))


def family_tokens(df: pl.DataFrame) -> pl.DataFrame:
    """Replace each row's training tokens by the geometric mean of its family's known
    token counts (rows whose family has none stay null, to be imputed)."""
    return df.with_columns(pl.col("family").replace_strict(family_mean_tokens(df), default=None,
                                                           return_dtype=pl.Float64).alias("train_tokens_b"))


def tokens_centre(df: pl.DataFrame, level: pl.Series) -> dict[str, float]:
    """Per level of a grouping of families, the mean over its families (each counted once)
    of the family's mean ln(D / 1T); levels whose families all lack D are left out."""
    fams = (pl.DataFrame({"level": level, "family": df["family"], "ld": df["train_tokens_b"].log() - LOG_D_REF})
            .drop_nulls().group_by("level", "family").agg(pl.col("ld").mean())
            .group_by("level").agg(pl.col("ld").mean()))
    return dict(zip(fams["level"].to_list(), fams["ld"].to_list()))


def grouping_values(df: pl.DataFrame, g: str) -> pl.Series:
    """Each row's level of grouping ``g``: a column's value, or for an interaction the
    parts joined by "|" (null where a part is missing, or where the table lacks them)."""
    parts = INTERACTIONS.get(g, (g,))
    if not all(c in df.columns for c in parts):
        return pl.Series(g, [None] * df.height, dtype=pl.String)
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
    pairs = (pl.DataFrame({"c": child, "p": parent}).drop_nulls("c").group_by("c")
             .agg(pl.col("p").drop_nulls().unique().sort()).sort("c"))
    for level, ps in zip(pairs["c"].to_list(), pairs["p"].to_list()):
        if len(ps) != 1:
            where = f"under {', '.join(ps)}" if ps else f"with no {p}"
            raise QBayesError(f"grouping '{g}' is not nested in '{p}': level '{level}' occurs {where}; "
                              f"drop 'within' from the spec or fix the data")
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

    @classmethod
    def from_table(cls, df: pl.DataFrame, features: tuple[str, ...] = (),
                   within: dict[str, str] | None = None, tokens_within: str | None = None,
                   known: KnownFamilies | None = None) -> Encoding:
        """``within`` maps a nested grouping to its parent grouping, ``tokens_within`` names
        the grouping whose families' mean ln D each row's ln D is centred on (both from the
        spec); ``known`` is known_families.load(). Rows without training tokens get their
        family's from the table of known families, as in :func:`encode`; the models left
        without any each get a latent ln D."""
        known_designs, known_tokens = (known.designs, known.tokens) if known else ({}, {})
        fam_tokens = family_mean_tokens(df)
        df = cls(levels={}, tokens_missing=(), family_tokens_seen=fam_tokens,
                 known_tokens=known_tokens).fill(df, "train_tokens_b")
        values = {g: grouping_values(df, g) for g in GROUPINGS}
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
        return cls(levels=levels, tokens_missing=missing, features=scales(df, features),
                   family_arch=dict(zip(arch["family"].to_list(), arch["arch"].to_list())),
                   per_channel_only=pc_only, within=dict(within or {}), parents=parents,
                   tokens_within=tokens_within, tokens_centre=centre,
                   family_tokens_seen=fam_tokens, known_designs=dict(known_designs), known_tokens=dict(known_tokens))

    def to_dict(self) -> dict:
        return {"levels": {k: list(v) for k, v in self.levels.items()}, "tokens_missing": list(self.tokens_missing),
                "features": {k: list(v) for k, v in self.features.items()}, "family_arch": dict(self.family_arch),
                "per_channel_only": {k: list(v) for k, v in self.per_channel_only.items()},
                "within": dict(self.within), "parents": {k: list(v) for k, v in self.parents.items()},
                "tokens_within": self.tokens_within, "tokens_centre": dict(self.tokens_centre),
                "family_tokens_seen": dict(self.family_tokens_seen), "known_designs": dict(self.known_designs),
                "known_tokens": dict(self.known_tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> Encoding:
        return cls(levels={k: tuple(v) for k, v in d["levels"].items()}, tokens_missing=tuple(d["tokens_missing"]),
                   features={k: (float(v[0]), float(v[1])) for k, v in d.get("features", {}).items()},
                   family_arch=dict(d.get("family_arch", {})),
                   per_channel_only={k: tuple(v) for k, v in d.get("per_channel_only", {}).items()},
                   within=dict(d.get("within", {})), parents={k: tuple(v) for k, v in d.get("parents", {}).items()},
                   tokens_within=d.get("tokens_within"),
                   tokens_centre={k: float(v) for k, v in d.get("tokens_centre", {}).items()},
                   family_tokens_seen={k: float(v) for k, v in d.get("family_tokens_seen", {}).items()},
                   known_designs=dict(d.get("known_designs", {})),
                   known_tokens={k: float(v) for k, v in d.get("known_tokens", {}).items()})

    def _sources(self, column: str) -> dict[str, pl.Expr]:
        """Where a row's block design (``column`` "arch") or training tokens
        ("train_tokens_b") can come from, first choice first."""
        family, dtype = pl.col("family"), STANDARD[column]
        if column == "arch":
            query, fit, known = (pl.col("arch").str.to_lowercase().str.replace_all(r"\s", "").replace("", None),
                                 self.family_arch, self.known_designs)
        else:
            query, fit, known = pl.col(column), self.family_tokens_seen, self.known_tokens
        return {"query": query,
                "fit": family.replace_strict(fit, default=None, return_dtype=dtype),
                "known_families": key_expr(family).replace_strict(known, default=None, return_dtype=dtype)}

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

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.features)


@dataclass(frozen=True)
class Design:
    """Covariates for N rows. ``idx[g]`` is -1 for a level the fit has not seen, and
    ``new_ids[g]`` numbers the distinct unseen values (0, 1, ... in order of appearance; -1
    for a seen level), so that two new families get two independent effects;
    ``new_scale[g]`` is the scale of an unseen level's effect, in units of the grouping's sd
    (:func:`new_level_scale`); ``tokens_idx`` indexes the latent ln D of a model seen without
    D (-1 otherwise)."""

    bits_c: np.ndarray
    log_n_c: np.ndarray
    log_d_c: np.ndarray  # NaN where training tokens are unknown
    tokens_idx: np.ndarray
    # spec tokens_within: the design's mean ln D, subtracted from ln D (known or latent);
    # NaN where the row has no D term (a design the fit has no mean for); 0 without the spec
    log_d_shift: np.ndarray
    per_channel: np.ndarray
    # per grouping, the covariate of its per-channel effect: per_channel, less 1 for
    # levels seen only per channel, whose intercept then is their per-channel value (their
    # intercept and per-channel shift were identified only as a sum: a ridge for NUTS)
    per_channel_by: dict[str, np.ndarray]
    log2_group: np.ndarray
    act_q: np.ndarray
    act_c: np.ndarray
    idx: dict[str, np.ndarray]
    feats: np.ndarray  # (N, F) standardised feature covariates, 0 where unmeasured
    feats_missing: np.ndarray  # (N, F) True where a feature was unmeasured
    new_ids: dict[str, np.ndarray] = field(default_factory=dict)
    new_scale: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.bits_c)

    def new_level(self, grouping: str) -> np.ndarray:
        return self.idx[grouping] < 0

    def rows(self, sl: slice) -> Design:
        """The design of a contiguous block of rows (views, no copies)."""
        dicts = ("idx", "per_channel_by", "new_ids", "new_scale")
        arrays = {f.name: getattr(self, f.name)[sl] for f in dataclasses.fields(self) if f.name not in dicts}
        return Design(**arrays, **{k: {g: v[sl] for g, v in getattr(self, k).items()} for k in dicts})


def new_level_scale(enc: Encoding, g: str, values: dict[str, pl.Series]) -> np.ndarray:
    """Per row, the sd of an unseen level's effect in units of the grouping's sd: it is
    N(0, (scale * sd)^2) around the global term (or, nested, around its parent's effect).

    A zero-sum grouping with K seen levels is the model b_j ~ N(mu, sd^2) with the global
    term carrying mu + mean(b) and the effects b_j - mean(b) (their variance is
    sd^2 (K - 1) / K, as in ``pm.ZeroSumNormal``). A new level is b_new - mean(b) from
    that global term: variance sd^2 (1 + 1/K), the extra 1/K being what the seen levels
    leave unknown about mu. With 2 seen block designs that widens a new design's draw by
    1.22. A nested grouping (spec ``within``) is the same within each parent level, with k
    the levels seen in the row's parent: a new family of the LLaMA-style design (LLaMA-1
    and Llama-2 seen) gets sqrt(1.5); of OPT's design, where OPT alone carries no family
    effect, sqrt(2); of a design the fit never saw, 1 (that design's own fresh effect
    carries the rest)."""
    n = values[g].len()
    if g not in enc.parents:
        k = len(enc.levels[g])
        return np.full(n, np.sqrt(1.0 + 1.0 / k) if k else 1.0)
    seen = Counter(enc.parents[g])  # parent level -> levels of g seen in it
    k = values[enc.within[g]].replace_strict(seen, default=0, return_dtype=pl.Float64).fill_null(0.0).to_numpy()
    return np.where(k > 0, np.sqrt(1.0 + 1.0 / np.maximum(k, 1.0)), 1.0)


def encode(df: pl.DataFrame, enc: Encoding) -> Design:
    """Turn a standard table into a :class:`Design` under a fit's encoding."""
    def col(name: str) -> np.ndarray:
        return df.get_column(name).cast(pl.Float64).to_numpy()

    group = df.get_column("group_size").cast(pl.Float64).to_numpy()
    per_channel = np.isnan(group)
    act = col("act_bits")
    df = respell(df, enc.levels)[0]
    if "family" in df.columns:
        df = enc.fill(df, "train_tokens_b")
        if "arch" in df.columns:
            df = enc.fill(df, "arch")
    values = {g: grouping_values(df, g) for g in enc.levels}
    idx = {g: level_index(values[g], levels) for g, levels in enc.levels.items()}
    new_ids = {g: unseen_ids(values[g], idx[g]) for g in enc.levels}
    new_scale = {g: new_level_scale(enc, g, values) for g in enc.levels}
    per_channel_by = {}
    for g, only in enc.per_channel_only.items():
        home = np.isin(idx[g], level_index(pl.Series(only, dtype=pl.String), enc.levels[g]))
        per_channel_by[g] = per_channel.astype(np.float64) - home  # a new level (-1) is never at home
    feats, feats_missing = standardise(df, enc.features)
    tokens = col("train_tokens_b")
    tokens_idx = np.where(np.isnan(tokens), level_index(df.get_column("model"), enc.tokens_missing), -1)
    log_d_c, log_d_shift = np.log(tokens) - LOG_D_REF, np.zeros(len(tokens))
    if enc.tokens_within is not None:
        # ln D measured from its design's mean: a row whose design the fit has no mean for
        # (a new design) gets no D term at all, known D or not
        centre = grouping_values(df, enc.tokens_within).replace_strict(enc.tokens_centre, default=None,
                                                                       return_dtype=pl.Float64).to_numpy()
        known = ~np.isnan(centre)
        log_d_shift = centre  # NaN marks the rows without a D term
        log_d_c = np.where(known, log_d_c - centre, 0.0)  # 0, not NaN: never a latent either
    return Design(
        bits_c=col("bits") - BITS_REF,
        log_n_c=np.log(col("params_b")) - LOG_N_REF,
        log_d_c=log_d_c,
        tokens_idx=tokens_idx,
        log_d_shift=log_d_shift,
        per_channel=per_channel.astype(np.float64),
        per_channel_by=per_channel_by,
        log2_group=np.where(per_channel, 0.0, np.log2(np.where(per_channel, GROUP_REF, group) / GROUP_REF)),
        act_q=(act < 16).astype(np.float64),
        act_c=act - BITS_REF,
        idx=idx,
        feats=feats,
        feats_missing=feats_missing,
        new_ids=new_ids,
        new_scale=new_scale,
    )


# --- prediction queries ------------------------------------------------------------

QUERY_REQUIRED = ("family", "model", "params_b", "method", "w_bits", "eval_set", "fp16_ppl")
QUERY_OPTIONAL = {"train_tokens_b": None, "arch": None, "group_size": None, "act_bits": 16.0, "w_kind": "int",
                  "source": None,
                  # a format name (named_formats) fills method, bits, group and kind; bits per
                  # weight, where given, is the bits covariate instead of effective_bits'
                  "format": None, "bits_per_weight": None,
                  **{c: None for c in RAW_COLUMNS}}


def extra_query_columns(df: pl.DataFrame) -> list[str]:
    """Columns of a query file that prediction does not use (ids, notes, observed values):
    :func:`query_table` leaves them out, and ``qbayes predict`` returns them untouched."""
    return [c for c in df.columns if c not in QUERY_REQUIRED and c not in QUERY_OPTIONAL]


def query_table(df: pl.DataFrame, where: str = "queries") -> pl.DataFrame:
    """Check and normalise prediction queries into the standard table. Raises
    :class:`QBayesError` naming every problem (missing columns with close matches,
    out-of-range values with their rows). A column that is not a query column is left out
    of the table (see :func:`extra_query_columns`) unless it looks like a misspelling of a
    query column the table lacks, which is refused."""
    from qbayes.errors import suggest

    df = expand_formats(df, where, defaults=QUERY_OPTIONAL)
    known = list(QUERY_REQUIRED) + list(QUERY_OPTIONAL)
    absent = [c for c in known if c not in df.columns]
    problems = []
    for c in QUERY_REQUIRED:
        if c not in df.columns:
            extra = [x for x in df.columns if x not in known]
            problems.append(f"missing column '{c}'{suggest(c, extra)}")
    for c in df.columns:
        hint = "" if c in known else suggest(c, absent)
        if hint:
            problems.append(f"unknown column '{c}'{hint}")
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems) + f". Expected columns: {', '.join(known)}")
    for c, default in QUERY_OPTIONAL.items():
        if c not in df.columns:
            df = df.with_columns(pl.lit(default).alias(c))
    casts = {c: STANDARD[c] for c in STANDARD if c in df.columns} | {"bits_per_weight": pl.Float64}
    out = {}
    for c, dtype in casts.items():
        s = df.get_column(c)
        if s.dtype == pl.String and dtype != pl.String:
            s = s.str.strip_chars().replace("", None)
        cast = s.cast(dtype, strict=False)
        bad = s.is_not_null() & cast.is_null()
        if bad.any():
            rows = (bad.arg_true() + 1).head(5).to_list()
            problems.append(f"column '{c}' has values that are not {dtype} in rows {rows}")
        out[c] = cast
    # -1 is how GPTQ configurations (AutoGPTQ, transformers' GPTQConfig) say "per channel"
    df = pl.DataFrame(out).with_columns(pl.col("group_size").replace(-1, None))

    def check(mask: pl.Series, msg: str):
        if mask.any():
            problems.append(f"{msg} (rows {(mask.arg_true() + 1).head(5).to_list()})")

    if not problems:
        for c in ("family", "model", "method", "eval_set", "params_b", "w_bits", "fp16_ppl"):
            check(df[c].is_null(), f"column '{c}' is empty")
        check(df["w_bits"] <= 0, "w_bits must be > 0")
        check(df["w_bits"] > 16, "w_bits must be <= 16")
        check(df["params_b"] <= 0, "params_b must be > 0")
        check(df["fp16_ppl"] <= 1, "fp16_ppl must be > 1")
        check(df["train_tokens_b"] <= 0, "train_tokens_b must be > 0")
        check(df["group_size"] <= 0, "group_size must be > 0 (empty or -1: one scale per output channel)")
        check((df["act_bits"] <= 0) | (df["act_bits"] > 16), "act_bits must be in (0, 16]")
        check((df["bits_per_weight"] <= 0) | (df["bits_per_weight"] > 40), "bits_per_weight must be in (0, 40]")
        for c in ("w_bits", "params_b", "fp16_ppl", "act_bits"):
            check(df[c].is_nan(), f"column '{c}' is NaN")
    if problems:
        raise QBayesError(f"{where}: " + "; ".join(problems))
    convention = effective_bits(pl.col("w_bits"), pl.col("group_size"), pl.col("w_kind"))
    df = df.with_columns(pl.coalesce(pl.col("bits_per_weight"), convention).alias("bits"))
    return df.select(*STANDARD)

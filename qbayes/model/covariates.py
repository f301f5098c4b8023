"""Covariates: the numbers the model's mean is computed from, for N rows of a standard
table read under a fit's :class:`~qbayes.model.encoding.Encoding`.

:func:`covariates` is the one place a table becomes arrays: centred bits, ln N, ln D,
group size, activation bits, level indexes per grouping, measured features. Fit and
predict both go through it, so they cannot disagree on a covariate. A level the fit
has not seen gets index -1 and a scale for its fresh effect (:func:`new_level_scale`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from qbayes.model.encoding import Encoding, ReadTable, grouping_values, level_index, unseen_ids
from qbayes.model.features import standardise
from qbayes.model.spec import OPTIONAL_GROUPINGS
from qbayes.model.table import BITS_REF, GROUP_REF, LOG_D_REF, LOG_N_REF


@dataclass(frozen=True)
class Covariates:
    """Covariates for N rows. ``idx[g]`` is -1 for a level the fit has not seen, and
    ``new_ids[g]`` numbers the distinct unseen values (0, 1, ... in order of appearance; -1
    for a seen level), so that two new families get two independent effects;
    ``new_scale[g]`` is the scale of an unseen level's effect, in units of the grouping's sd
    (:func:`new_level_scale`). A row without a level of an optional grouping (spec
    OPTIONAL_GROUPINGS: no named format) has index -1, new id -1 and scale 0: no effect,
    and not a new level. ``tokens_idx`` indexes the latent ln D of a model seen without
    D (-1 otherwise)."""

    bits_c: np.ndarray
    log_n_c: np.ndarray
    log_d_c: np.ndarray  # NaN where training tokens are unknown
    tokens_idx: np.ndarray
    # spec tokens_within: the block design's mean ln D, subtracted from ln D (known or latent);
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
    # the collapse anchor (model.collapse): ln V of the vocabulary (NaN where unknown) and
    # ln of the unquantized perplexity
    log_vocab: np.ndarray
    log_fp16: np.ndarray
    idx: dict[str, np.ndarray]
    feats: np.ndarray  # (N, F) standardised feature covariates, 0 where unmeasured
    feats_missing: np.ndarray  # (N, F) True where a feature was unmeasured
    new_ids: dict[str, np.ndarray] = field(default_factory=dict)
    new_scale: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.bits_c)

    def new_level(self, grouping: str) -> np.ndarray:
        """Rows whose level of ``grouping`` the fit has not seen (not rows without one)."""
        return self.new_ids[grouping] >= 0 if grouping in self.new_ids else self.idx[grouping] < 0

    def as_one_new_level(self, grouping: str) -> Covariates:
        """These covariates with every row's level of ``grouping`` read as one level the fit
        has not seen (at the scale of a new level of it)."""
        n = self.n
        return dataclasses.replace(
            self,
            idx={**self.idx, grouping: np.full(n, -1)},
            new_ids={**self.new_ids, grouping: np.zeros(n, dtype=np.int64)},
        )

    def rows(self, sl: slice) -> Covariates:
        """The covariates of a contiguous block of rows (views, no copies)."""
        dicts = ("idx", "per_channel_by", "new_ids", "new_scale")
        arrays = {f.name: getattr(self, f.name)[sl] for f in dataclasses.fields(self) if f.name not in dicts}
        return Covariates(**arrays, **{k: {g: v[sl] for g, v in getattr(self, k).items()} for k in dicts})


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


def covariates(read: ReadTable) -> Covariates:
    """The covariates of a standard table as a fit reads it (:meth:`Encoding.read`)."""
    df, enc = read.table, read.encoding

    def col(name: str) -> np.ndarray:
        return df.get_column(name).cast(pl.Float64).to_numpy()

    group = col("group_size")
    per_channel = np.isnan(group)
    act = col("act_bits")
    values = {g: grouping_values(df, g) for g in enc.levels}
    idx = {g: level_index(values[g], levels) for g, levels in enc.levels.items()}
    new_ids = {g: unseen_ids(values[g], idx[g]) for g in enc.levels}
    new_scale = {g: new_level_scale(enc, g, values) for g in enc.levels}
    for g in set(OPTIONAL_GROUPINGS) & set(enc.levels):
        absent = values[g].is_null().to_numpy()  # no level: neither an effect nor a new level
        new_ids[g] = unseen_ids(values[g], np.where(absent, 0, idx[g]))
        new_scale[g] = np.where(absent, 0.0, new_scale[g])
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
        centre = (
            grouping_values(df, enc.tokens_within)
            .replace_strict(enc.tokens_centre, default=None, return_dtype=pl.Float64)
            .to_numpy()
        )
        known = ~np.isnan(centre)
        log_d_shift = centre  # NaN marks the rows without a D term
        log_d_c = np.where(known, log_d_c - centre, 0.0)  # 0, not NaN: never a latent either
    return Covariates(
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
        log_vocab=np.log(col("vocab_size")) if "vocab_size" in df.columns else np.full(df.height, np.nan),
        log_fp16=np.log(col("fp16_ppl")),
        idx=idx,
        feats=feats,
        feats_missing=feats_missing,
        new_ids=new_ids,
        new_scale=new_scale,
    )

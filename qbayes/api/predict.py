"""Predictions as a table: the work behind ``qbayes predict`` and `qbayes.Model.predict`.

One code path for the command line and Python: queries in the query layout (format names,
optional ``task``/``fp16_acc`` and ``new_ok``) become the table ``qbayes predict --output``
writes, and the lines the command prints on stderr are returned as notes.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from qbayes.db.named_formats import COLUMN as FORMAT
from qbayes.db.named_formats import expand as expand_formats
from qbayes.db.named_formats import method_hints
from qbayes.errors import QBayesError
from qbayes.model import conditioning, known_families, unseen
from qbayes.model.accuracy.predict import ACC_COLUMNS, AccuracyPredictor, check_queries
from qbayes.model.extrapolation import OUTSIDE, FittedRange, outside
from qbayes.model.predict import OUTPUT_COLUMNS, QUANTILES, Predictor
from qbayes.model.queries import QUERY_OPTIONAL, extra_query_columns, query_table
from qbayes.model.respell import describe

# loads the accuracy predictor when a query names a task, given the perplexity predictor
AccuracyLoader = Callable[[Predictor], AccuracyPredictor]
DEFAULT_PPL_COLUMNS = tuple(c for c in OUTPUT_COLUMNS if c.startswith("ppl_q"))


def check_quantiles(quantiles) -> tuple[float, ...]:
    """``quantiles`` (probabilities) checked: whole percents from 1 to 99, so that each names
    its column ``ppl_qNN`` unambiguously; sorted, without repeats."""
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence) or not quantiles:
        raise QBayesError(f"quantiles must be a non-empty list of probabilities such as 0.05, not {quantiles!r}")
    out = set()
    for p in quantiles:
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.01 <= p <= 0.99:
            raise QBayesError(f"quantiles must be probabilities from 0.01 to 0.99, not {p!r}")
        if abs(p * 100 - round(p * 100)) > 1e-9:
            raise QBayesError(f"quantile {p!r} is not a whole percent: its column would be named like another's")
        out.add(round(p * 100) / 100)
    return tuple(sorted(out))


def output_columns(quantiles=QUANTILES) -> tuple[str, ...]:
    """The prediction columns written after the query's own: `OUTPUT_COLUMNS` with the
    perplexity quantiles ``ppl_qNN`` of ``quantiles`` in place of the default five."""
    ppl = tuple(f"ppl_q{round(p * 100):02d}" for p in quantiles)
    return ppl + tuple(c for c in OUTPUT_COLUMNS if c not in DEFAULT_PPL_COLUMNS)


@dataclass
class PredictionRun:
    """What one prediction made: ``table`` (the queries as given, then the prediction
    columns: what ``qbayes predict --output`` writes), the parts the command's screen
    output reads (``pred``: the queries' standard table with every prediction column,
    ``flags``: the ``outside_*`` columns, ``named``: the format names or None,
    ``fitted``: the fit's range), and ``notes``: lines for the user."""

    table: pl.DataFrame
    pred: pl.DataFrame
    flags: pl.DataFrame
    named: pl.Series | None
    fitted: FittedRange
    notes: list[str] = field(default_factory=list)


def predict_table(
    predictor: Predictor,
    raw: pl.DataFrame,
    *,
    where: str,
    new_level: bool = False,
    observed: conditioning.Observed | None = None,
    accuracy: AccuracyLoader | None = None,
    quantiles: Sequence[float] = QUANTILES,
) -> PredictionRun:
    """Predict the queries ``raw`` (query layout, columns as text or typed) with ``predictor``.

    ``where`` names the queries in messages; ``new_level`` marks every unseen level as new
    on purpose (else the ``new_ok`` column, if any, does per row); ``observed`` rows
    condition the predictions (adds the ``obs_*`` columns); ``accuracy`` is called when a
    row names a task (adds the ``acc_*`` columns, percent); ``quantiles`` (whole percents)
    are the perplexity quantiles written, ``ppl_qNN`` (the command's screen output reads
    ``pred``, which has the default five too). Raises QBayesError on bad input."""
    quantiles = check_quantiles(quantiles)
    notes: list[str] = []
    # the output says what each format name was read as, and the bits per weight it was predicted with
    raw = expand_formats(raw, where, defaults=QUERY_OPTIONAL)
    queries = query_table(raw, where)
    if FORMAT in raw.columns:
        raw = raw.with_columns(queries.get_column("bits").alias("bits_per_weight"))
    extra = extra_query_columns(raw)
    written = output_columns(quantiles) + OUTPUT_COLUMNS + conditioning.OUTPUT_COLUMNS + ACC_COLUMNS
    clash = [c for c in extra if c in written or c in OUTSIDE]
    if clash:
        raise QBayesError(
            f"{where}: column(s) {', '.join(clash)} are what predict writes; drop them from the "
            "queries (is this a predictions file?)"
        )
    if extra:
        notes.append(f"not used for prediction, returned as given: {', '.join(extra)}")
    new_ok = new_level or unseen.new_ok_values(raw, where)
    unseen.refuse_typos(queries, predictor.fit.encoding, where, new_ok, families=known_families.load())
    if observed is not None:
        cond = conditioning.condition(predictor, observed, queries)
        predictor, rows = cond.predictor, cond.rows
        notes += conditioning.unmatched(observed, queries) + conditioning.report(cond)
    else:
        rows = predictor.prepare(queries)
    notes += describe(predictor.respelled)
    pred = predictor.predict(rows, quantiles=sorted(set(QUANTILES) | set(quantiles)))
    if observed is not None:
        pred = pl.concat([pred, cond.columns(queries)], how="horizontal")
    notes += method_hints(queries.filter(pred["new_method"])["method"])
    fitted = FittedRange.of(predictor.fit)
    named = raw.get_column(FORMAT) if FORMAT in raw.columns else None
    flags = outside(fitted, pred["params_b"], pred["train_tokens_b_used"], pred["bits"], named)
    written = output_columns(quantiles) + (conditioning.OUTPUT_COLUMNS if observed is not None else ())
    table = pl.concat([raw, pred.select(written), flags], how="horizontal")
    acc = _accuracy_columns(raw, queries, predictor, accuracy, where)
    if acc is not None:
        table = pl.concat([table, acc], how="horizontal")
    return PredictionRun(table=table, pred=pred, flags=flags, named=named, fitted=fitted, notes=notes)


def _accuracy_columns(raw, queries, predictor: Predictor, accuracy: AccuracyLoader | None, where: str):
    """The `ACC_COLUMNS` of the query rows that name a task (null for the others), or
    None when no row does. ``raw`` holds task and fp16_acc; ``queries`` is its standard table."""
    if "task" not in raw.columns or raw.get_column("task").null_count() == raw.height:
        if "fp16_acc" in raw.columns and raw.get_column("fp16_acc").null_count() < raw.height:
            raise QBayesError(f"{where}: fp16_acc is given, but no task: name the task it was measured on")
        return None
    if accuracy is None:
        raise QBayesError(f"{where}: rows name a task, but no accuracy fit is at hand")
    acc = accuracy(predictor)
    mask = raw.get_column("task").is_not_null()
    asked = raw.filter(mask)
    check_queries(asked.with_columns(pl.col("fp16_acc").cast(pl.Float64, strict=False)), acc.tasks, where)
    wikitext2 = queries.filter(mask).with_columns(pl.lit("wikitext2").alias("eval_set"))  # the model's Δ
    delta = predictor.delta(predictor.prepare(wikitext2))
    fp16_acc = asked.get_column("fp16_acc").cast(pl.Float64).to_numpy()
    summary = acc.summarise(acc.acc_draws(delta, asked.get_column("task").to_list(), fp16_acc))
    idx = np.flatnonzero(mask.to_numpy())
    full = {c: np.full(raw.height, np.nan) for c in ACC_COLUMNS}
    for c in ACC_COLUMNS:
        full[c][idx] = summary.get_column(c).to_numpy()
    return pl.DataFrame({c: pl.Series(c, v).fill_nan(None) for c, v in full.items()})

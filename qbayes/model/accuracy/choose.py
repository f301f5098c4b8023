"""Ranking the options of ``qbayes choose`` by predicted accuracy on one task.

:func:`qbayes.model.choose.choose` gives every option its memory and perplexity; here each
option within the budget gets its predicted accuracy on the task (``acc_q05`` ...
``acc_q95``, ``acc_mean``), and the options are ranked by median accuracy (ties: less
memory first). ``acc_p_best`` is the share of posterior draws in which an option has the
highest expected accuracy of all options within the budget: the accuracy the law gives
each draw's mean degradation, without the task's measurement noise, which is independent
per option and would blur a comparison the posterior does settle (as for perplexity). The
unquantized options keep their measured accuracy.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from qbayes.db.named_formats import COLUMN as FORMAT
from qbayes.model.accuracy.predict import ACC_COLUMNS, AccuracyPredictor
from qbayes.model.predict import Predictor

OPTION_KEY = ("model", FORMAT, "method", "w_bits", "group_size")


def rank_by_accuracy(
    table: pl.DataFrame,
    options: pl.DataFrame,
    predictor: Predictor,
    acc: AccuracyPredictor,
    task: str,
    fp16_acc: dict[str, float],
) -> pl.DataFrame:
    """``table`` (from :func:`qbayes.model.choose.choose`) with the accuracy columns,
    ``acc_rank`` and ``acc_p_best``, sorted by ``acc_rank``. ``options`` is the standard
    query table of its quantized options; ``fp16_acc`` the unquantized accuracy of each
    candidate model on ``task``."""
    q = options.with_columns(pl.lit("wikitext2").alias("eval_set"))  # the accuracy law's Δ
    rows = predictor.prepare(q)
    tasks = [task] * q.height
    f = q.get_column("model").replace_strict(fp16_acc, return_dtype=pl.Float64).to_numpy()
    summary = acc.summarise(acc.acc_draws(predictor.delta(rows), tasks, f))
    expected = acc.expected(predictor.mean(rows), tasks, f)  # (N, S)
    quant = pl.concat([options.select("model", FORMAT, "method", "w_bits", "group_size"), summary], how="horizontal")
    quant = quant.with_row_index("__option")
    joined = table.join(quant, on=list(OPTION_KEY), how="left", nulls_equal=True, maintain_order="left")
    is_fp16 = (joined.get_column("method") == "fp16").to_numpy()
    base = joined.get_column("model").replace_strict(fp16_acc, default=None, return_dtype=pl.Float64).to_numpy()
    joined = joined.with_columns(
        *(pl.when(pl.Series(is_fp16)).then(pl.Series(base)).otherwise(pl.col(c)).alias(c) for c in ACC_COLUMNS)
    )
    s = expected.shape[1]
    idx = joined.get_column("__option").to_numpy()
    draws = np.empty((joined.height, s))
    for i in range(joined.height):
        draws[i] = base[i] if is_fp16[i] else expected[int(idx[i])]
    within = joined.get_column("within_budget").to_numpy()
    ok = np.flatnonzero(within)
    median = joined.get_column("acc_q50").to_numpy()
    memory = joined.get_column("memory_gb").to_numpy()
    order = ok[np.lexsort((memory[ok], -median[ok]))]
    winners = ok[np.argmax(draws[ok], axis=0)] if ok.size else np.zeros(0, dtype=int)
    rank = np.full(joined.height, None, dtype=object)
    p_best = np.full(joined.height, np.nan)
    rank[order] = np.arange(1, order.size + 1)
    p_best[order] = [np.mean(winners == i) for i in order]
    out = joined.drop("__option").with_columns(
        pl.Series("acc_rank", rank.tolist(), dtype=pl.Int64), pl.Series("acc_p_best", p_best)
    )
    return out.sort(["acc_rank", "memory_gb"], nulls_last=True)

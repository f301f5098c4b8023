"""Section 7: what a degradation costs on tasks. Per task, from the accuracy fit: the
accuracy points a model at the task's median unquantized accuracy loses per 0.1 nats of Δ
(posterior interval), the rate and excess noise behind it, and the rows it was fitted to.
Tasks whose excess noise is small next to their binomial error are those perplexity
predicts well: Δ explains their drops up to the measurement noise."""

from __future__ import annotations

import numpy as np

from qbayes.model.accuracy.fitfile import AccuracyFit
from qbayes.model.tasks import load as load_tasks
from qbayes.report.context import Context
from qbayes.report.html import Cell, Section, interval, para, table

STEP = 0.1  # nats of Δ the table prices


def points_per_step(fit: AccuracyFit, task: str, fp16_acc: float, chance: float) -> np.ndarray:
    """Posterior draws of the accuracy points lost at Δ = STEP by a model at ``fp16_acc``."""
    post = fit.posterior
    k = post["k"].sel(task=task).values.ravel()
    alpha = post["alpha"].values.ravel()
    return (fp16_acc - chance) * (1.0 - np.exp(-k * STEP**alpha))


def _table(fit: AccuracyFit) -> str:
    tasks = load_tasks()
    rows = []
    post = fit.posterior
    for name in fit.info.tasks:
        r = fit.rows.filter(fit.rows["task"] == name)
        t = tasks.get(name)
        f = float(r["fp16_acc"].median())
        lost = points_per_step(fit, name, f, t.chance)
        tau = post["tau"].sel(task=name).values.ravel()
        se = t.binomial_se(f)
        rows.append(
            [
                name,
                f"{t.chance:g}",
                t.n_items,
                r.height,
                r["config"].n_unique(),
                f"{f:.1f}",
                Cell(interval(*np.quantile(lost, [0.5, 0.05, 0.95]), digits=2), "num"),
                Cell(interval(*np.quantile(tau, [0.5, 0.05, 0.95]), digits=2), "num"),
                f"{se:.2f}",
                "well" if np.median(tau) < se else "loosely",
            ]
        )
    return table(
        [
            "task",
            "chance %",
            "questions",
            "rows",
            "configurations",
            "median fp16 acc %",
            f"points lost per {STEP:g} nats, median [90%]",
            "excess noise (points)",
            "binomial se (points)",
            "Δ predicts it",
        ],
        rows,
    )


def render(ctx: Context) -> Section:
    fit = ctx.accuracy
    if fit is None:
        body = para(
            "No accuracy fit given (qbayes ships one as data/accuracy-fit.nc; `qbayes fit-accuracy` makes one)."
        )
        return Section("accuracy", "7. What a degradation costs on tasks", body)
    a = fit.info
    body = (
        para(
            f"The accuracy fit: {a.n_rows} published task accuracies of {a.n_configs} quantized configurations, "
            f"built on perplexity fit {a.ppl_fit.data_hash} ({a.ppl_fit.path}). Each task keeps a share "
            "exp(−k·Δ^α) of its accuracy above chance (docs/accuracy.md). The table prices 0.1 nats of Δ for a "
            "model at the task's median unquantized accuracy in the data; a task whose excess noise is below its "
            "binomial standard error is one where Δ explains the drops up to measurement noise."
        )
        + _table(fit)
        + para(f"Convergence: {a.convergence.line()}.")
    )
    return Section("accuracy", "7. What a degradation costs on tasks", body)

"""``qbayes.load`` and the `Model` it returns: a fitted posterior that predicts
DataFrames, for notebooks and scripts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qbayes import resources
from qbayes.api.choose import choose_table, fp16_accuracies, make_grid, read_budget, refuse_typos
from qbayes.api.frames import as_polars, like
from qbayes.api.predict import predict_table
from qbayes.errors import QBayesError
from qbayes.model import conditioning, fitfile
from qbayes.model.accuracy import fitfile as accuracy_fitfile
from qbayes.model.accuracy.predict import AccuracyPredictor
from qbayes.model.fitfile import Fit
from qbayes.model.predict import Predictor


class Model:
    """A fitted posterior that predicts: the shipped one or a fit file (`load`).

    ``fit`` is the fit itself (``fit.idata``: the ArviZ DataTree of the posterior);
    ``notes`` holds the lines the last `predict` would print on the command line
    (respellings, conditioning, hints)."""

    def __init__(self, fit: Fit, *, n_draws: int = 1000, seed: int = 0, accuracy_path: Path | None = None):
        self.fit = fit
        self.n_draws = n_draws
        self.seed = seed
        self.accuracy_path = accuracy_path
        self.notes: list[str] = []

    def __repr__(self) -> str:
        return f"<qbayes.Model {fitfile.describe(self.fit)}>"

    def predict(self, queries: Any, *, observed: Any = None, new_level: bool = False) -> Any:
        """Predicted perplexity, with intervals, of each query row.

        ``queries``: a polars or pandas DataFrame in the query layout of ``qbayes predict
        --input`` (family, model, params_b, method and w_bits or a ``format`` name such as
        ``Q4_K_M`` or ``int4-g128``, eval_set, fp16_ppl; optional ``task`` and ``fp16_acc``
        in percent, ``new_ok``). ``observed``: rows you measured (the same layout plus
        ``ppl``), to condition on. ``new_level``: unseen families, methods or evaluation
        sets are new on purpose, not typos.

        Returns the same kind of DataFrame with the columns ``qbayes predict`` writes:
        ``ppl_q05`` ... ``ppl_q95`` and ``ppl_mean`` (perplexity), ``delta_q50`` (the
        median degradation, nats per token), ``new_*`` flags, ``outside_*`` flags, with
        ``observed`` the ``obs_*`` columns, with a task ``acc_q05`` ... ``acc_mean``
        (percent accuracy). Bad input raises `qbayes.QBayesError`.

        Example:
            >>> import polars as pl, qbayes
            >>> m = qbayes.load()
            >>> q = pl.DataFrame({"family": ["llama-3"], "model": ["Llama-3-8B"], "params_b": [8.0],
            ...                   "format": ["Q4_K_M"], "eval_set": ["wikitext2"], "fp16_ppl": [6.14]})
            >>> m.predict(q).select("ppl_q05", "ppl_q50", "ppl_q95")
        """
        raw = as_polars(queries, "queries")
        obs = self._observed(observed)
        predictor = Predictor(self.fit, n_draws=self.n_draws, seed=self.seed)
        run = predict_table(predictor, raw, where="queries", new_level=new_level, observed=obs, accuracy=self._accuracy)
        self.notes = run.notes
        return like(run.table, queries)

    def choose(
        self,
        candidates: Any,
        *,
        budget_gb: float | None = None,
        budget_gib: float | None = None,
        formats: Sequence[str] = (),
        methods: Sequence[str] = (),
        w_bits: Sequence[float] = (),
        group_sizes: Sequence[int | None] = (),
        eval_set: str = "wikitext2",
        include_fp16: bool = True,
        overhead_gb: float = 0.0,
        context: int | None = None,
        tolerance: float = 1.0,
        observed: Any = None,
        new_level: bool = False,
        task: str | None = None,
        fp16_acc: float | None = None,
    ) -> Any:
        """Every (model, format) option for the candidate models, ranked within a memory
        budget, as ``qbayes choose --output`` writes them.

        ``candidates``: a polars or pandas DataFrame with family, model, params_b and
        fp16_ppl (optional: train_tokens_b, arch, eval_set, new_ok, fp16_acc in percent).
        The budget in GB (``budget_gb``, 10^9 bytes) or GiB (``budget_gib``); the options
        are named ``formats`` (``Q4_K_M``, ``int4-g128`` ...) and/or ``methods`` x
        ``w_bits`` x ``group_sizes`` (None: per-channel), with the command's defaults;
        ``overhead_gb`` and the fp16 KV cache of ``context`` tokens count against the
        budget; ``tolerance`` is in percent of perplexity. With ``task`` (and
        ``fp16_acc`` or a fp16_acc column) the options are ranked by predicted accuracy.

        Returns the same kind of DataFrame: one row per option, ``within_budget``,
        ``rank`` (1 = best; null over budget), ``memory_gb``, the perplexity quantiles,
        ``p_best``, ``p_within_tolerance`` and the difference to the best.

        Example:
            >>> import polars as pl, qbayes
            >>> cands = pl.DataFrame({"family": ["Qwen2.5"] * 2, "model": ["Qwen2.5-7B", "Qwen2.5-14B"],
            ...                       "params_b": [7.0, 14.0], "fp16_ppl": [6.85, 5.29]})
            >>> qbayes.load().choose(cands, budget_gib=8, formats=["Q4_K_M", "Q8_0"])
        """
        cands = as_polars(candidates, "candidates")
        budget, _, _ = read_budget(budget_gb, budget_gib)
        grid = make_grid(
            formats=formats,
            methods=methods,
            w_bits=w_bits,
            group_sizes=group_sizes,
            eval_set=eval_set,
            include_fp16=include_fp16,
            overhead_gb=overhead_gb,
            context=context,
        )
        predictor = Predictor(self.fit, n_draws=self.n_draws, seed=self.seed)
        refuse_typos(predictor, cands, grid, "candidates", new_level)
        run = choose_table(
            predictor,
            cands,
            grid,
            budget_gb=budget,
            tolerance=tolerance,
            observed=self._observed(observed),
            task=task,
            fp16_accs=fp16_accuracies(cands, task, fp16_acc),
            accuracy=self._accuracy,
        )
        self.notes = run.notes
        return like(run.table, candidates)

    @staticmethod
    def _observed(observed: Any) -> conditioning.Observed | None:
        if observed is None:
            return None
        return conditioning.observed_rows(as_polars(observed, "observed"), "observed")

    def _accuracy(self, predictor: Predictor) -> AccuracyPredictor:
        path = self.accuracy_path or resources.shipped_accuracy_fit()
        if path is None:
            raise QBayesError(
                "queries name a task, but this qbayes ships no accuracy fit (data/accuracy-fit.nc); "
                "make one with `qbayes fit-accuracy` and pass it as qbayes.load(accuracy_path=...)"
            )
        fit = accuracy_fitfile.load(path)
        note = accuracy_fitfile.other_perplexity_fit(fit, predictor.fit.info.data_hash)
        if note is not None:
            self.notes.append(note)
        return AccuracyPredictor(fit, n_draws=self.n_draws, seed=self.seed)


def load(
    path: str | os.PathLike | None = None,
    *,
    n_draws: int = 1000,
    seed: int = 0,
    accuracy_path: str | os.PathLike | None = None,
) -> Model:
    """The posterior at ``path`` (a fit file from ``qbayes fit``), or the shipped posterior
    of the default model when ``path`` is None, ready to predict.

    ``n_draws`` posterior draws (chosen with ``seed``) answer each prediction, as
    ``qbayes predict --draws --seed``; ``accuracy_path`` is the accuracy fit that answers
    queries naming a task (default: the shipped one).

    Example:
        >>> import qbayes
        >>> m = qbayes.load(n_draws=500)
        >>> m.fit.idata  # the ArviZ DataTree of the posterior
    """
    if path is None:
        path = resources.shipped_fit()
        if path is None:
            raise QBayesError(
                "no path given and this qbayes ships no posterior (data/default-fit.nc); "
                "make one with `qbayes fit` and pass its path"
            )
    if not isinstance(n_draws, int) or n_draws < 50:
        raise QBayesError(f"n_draws must be an integer of at least 50, not {n_draws!r}")
    acc = None if accuracy_path is None else Path(accuracy_path)
    return Model(fitfile.load(path), n_draws=n_draws, seed=seed, accuracy_path=acc)


def choose(candidates: Any, *, model: Model | None = None, budget_gb: float | None = None, **options: Any) -> Any:
    """`Model.choose` with ``model`` (default: the shipped posterior, `load`);
    ``options`` are its keywords (``budget_gib``, ``formats``, ``methods``, ``w_bits``,
    ``group_sizes``, ``overhead_gb``, ``context``, ``tolerance`` in percent, ``task``, ...).

    Example:
        >>> import polars as pl, qbayes
        >>> cands = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.0],
        ...                       "fp16_ppl": [6.85]})
        >>> qbayes.choose(cands, budget_gb=6, formats=["Q4_K_M", "Q6_K"])
    """
    return (model or load()).choose(candidates, budget_gb=budget_gb, **options)

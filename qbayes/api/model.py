"""``qbayes.load`` and the `Model` it returns: a fitted posterior that predicts
DataFrames, for notebooks and scripts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qbayes import resources
from qbayes.api import checks
from qbayes.api.choose import (
    Comparison,
    Grid,
    choose_table,
    compare_options,
    fp16_accuracies,
    make_grid,
    read_budget,
    refuse_typos,
)
from qbayes.api.frames import as_polars, like
from qbayes.api.predict import predict_table
from qbayes.api.suggest import Suggestion, suggest_table
from qbayes.errors import QBayesError
from qbayes.model import conditioning, fitfile
from qbayes.model.accuracy import fitfile as accuracy_fitfile
from qbayes.model.accuracy.predict import AccuracyPredictor
from qbayes.model.fitfile import Fit
from qbayes.model.predict import QUANTILES, Predictor
from qbayes.suggest.gpucost import REFERENCE_DEVICE


class Model:
    """A fitted posterior that predicts: the shipped one or a fit file (`load`).

    ``fit`` is the fit itself (``fit.idata``: the ArviZ DataTree of the posterior, Δ's
    parameters in nats per token); ``n_draws`` posterior draws chosen with ``seed`` answer
    each call; ``notes`` holds the lines the last call would print on the command line
    (respellings, conditioning, hints).

    Examples:
        >>> import qbayes
        >>> m = qbayes.load(n_draws=200)
        >>> m.n_draws, m.notes
        (200, [])
    """

    def __init__(self, fit: Fit, *, n_draws: int = 1000, seed: int = 0, accuracy_path: Path | None = None):
        self.fit = fit
        self.n_draws = n_draws
        self.seed = seed
        self.accuracy_path = accuracy_path
        self.notes: list[str] = []

    def __repr__(self) -> str:
        return f"<qbayes.Model {fitfile.describe(self.fit)}>"

    def predict(
        self, queries: Any, *, observed: Any = None, new_level: bool = False, quantiles: Sequence[float] = QUANTILES
    ) -> Any:
        """Predicted perplexity, with intervals, of each query row.

        ``queries``: a polars or pandas DataFrame in the query layout of ``qbayes predict
        --input`` (family, model, params_b, method and w_bits or a ``format`` name such as
        ``Q4_K_M`` or ``int4-g128``, eval_set, fp16_ppl; optional ``task`` and ``fp16_acc``
        in percent, ``new_ok``). ``observed``: rows you measured (the same layout plus
        ``ppl``), to condition on. ``new_level``: unseen families, methods or evaluation
        sets are new on purpose, not typos. ``quantiles``: the perplexity quantiles
        returned, probabilities in whole percents (``(0.1, 0.5, 0.9)`` gives ``ppl_q10``,
        ``ppl_q50``, ``ppl_q90``; as ``qbayes predict --quantile``).

        Returns the same kind of DataFrame with the columns ``qbayes predict`` writes:
        ``ppl_q05`` ... ``ppl_q95`` and ``ppl_mean`` (perplexity), ``delta_q50`` (the
        median degradation, nats per token), ``new_*`` flags, ``outside_*`` flags, with
        ``observed`` the ``obs_*`` columns, with a task ``acc_q05`` ... ``acc_mean``
        (percent accuracy). Bad input raises `qbayes.QBayesError`.

        Examples:
            >>> import polars as pl, qbayes
            >>> m = qbayes.load(n_draws=200)
            >>> q = pl.DataFrame({"family": ["LLaMA-3"], "model": ["Llama-3-8B"], "params_b": [8.0],
            ...                   "format": ["Q4_K_M"], "eval_set": ["wikitext2"], "fp16_ppl": [6.14]})
            >>> p = m.predict(q, quantiles=[0.1, 0.5, 0.9])
            >>> [c for c in p.columns if c.startswith("ppl_q")]
            ['ppl_q10', 'ppl_q50', 'ppl_q90']
            >>> bool(6.14 < p["ppl_q50"][0] < p["ppl_q90"][0])
            True
        """
        raw = as_polars(queries, "queries")
        checks.flag("new_level", new_level)
        obs = self._observed(observed)
        predictor = Predictor(self.fit, n_draws=self.n_draws, seed=self.seed)
        run = predict_table(
            predictor,
            raw,
            where="queries",
            new_level=new_level,
            observed=obs,
            accuracy=self._accuracy,
            quantiles=quantiles,
        )
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

        Examples:
            >>> import polars as pl, qbayes
            >>> cands = pl.DataFrame({"family": ["Qwen2.5"] * 2, "model": ["Qwen2.5-7B", "Qwen2.5-14B"],
            ...                       "params_b": [7.0, 14.0], "fp16_ppl": [6.85, 5.29]})
            >>> options = qbayes.load(n_draws=200).choose(cands, budget_gib=8, formats=["Q4_K_M", "Q8_0"])
            >>> sorted(options.filter(pl.col("within_budget")).select("model", "format").rows())
            [('Qwen2.5-14B', 'Q4_K_M'), ('Qwen2.5-7B', 'Q4_K_M'), ('Qwen2.5-7B', 'Q8_0')]
        """
        cands = as_polars(candidates, "candidates")
        checks.flag("new_level", new_level)
        checks.text("task", task, optional=True)
        checks.optional_number("fp16_acc", fp16_acc)
        budget, _, _ = read_budget(
            checks.optional_number("budget_gb", budget_gb), checks.optional_number("budget_gib", budget_gib)
        )
        grid = self._grid(formats, methods, w_bits, group_sizes, eval_set, include_fp16, overhead_gb, context)
        predictor = Predictor(self.fit, n_draws=self.n_draws, seed=self.seed)
        refuse_typos(predictor, cands, grid, "candidates", new_level)
        run = choose_table(
            predictor,
            cands,
            grid,
            budget_gb=budget,
            tolerance=checks.number("tolerance", tolerance, 0, 100),
            observed=self._observed(observed),
            task=task,
            fp16_accs=fp16_accuracies(cands, task, fp16_acc),
            accuracy=self._accuracy,
        )
        self.notes = run.notes
        return like(run.table, candidates)

    def compare(
        self,
        candidates: Any,
        first: str,
        second: str,
        *,
        formats: Sequence[str] = (),
        methods: Sequence[str] = (),
        w_bits: Sequence[float] = (),
        group_sizes: Sequence[int | None] = (),
        eval_set: str = "wikitext2",
        include_fp16: bool = True,
        tolerance: float = 1.0,
        observed: Any = None,
        new_level: bool = False,
    ) -> Comparison:
        """How much two options differ in perplexity as you would measure each (observation
        noise included), as ``qbayes compare FIRST SECOND`` prints it.

        ``candidates`` and the option keywords as for `choose` (no budget); ``first`` and
        ``second`` name options as ``qbayes choose`` prints them (``"Qwen2.5-7B Q4_K_M"``,
        or ``"Q4_K_M"`` when one candidate model has it); ``tolerance`` in percent.
        Returns a `qbayes.api.choose.Comparison`: the two options' rows, quantiles of the
        difference (perplexity) and of the relative difference, and the probabilities
        that the first is lower, within the tolerance, or more than it higher.

        Examples:
            >>> import polars as pl, qbayes
            >>> cands = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.6],
            ...                       "fp16_ppl": [6.85]})
            >>> c = qbayes.load(n_draws=200).compare(cands, "Q4_K_M", "Q8_0", formats=["Q4_K_M", "Q8_0"])
            >>> c.p_first_lower < 0.5  # Q4_K_M is likely worse than Q8_0
            True
        """
        cands = as_polars(candidates, "candidates")
        checks.flag("new_level", new_level)
        grid = self._grid(formats, methods, w_bits, group_sizes, eval_set, include_fp16, 0.0, None)
        predictor = Predictor(self.fit, n_draws=self.n_draws, seed=self.seed)
        refuse_typos(predictor, cands, grid, "candidates", new_level)
        result = compare_options(
            predictor,
            cands,
            grid,
            first,
            second,
            tolerance=checks.number("tolerance", tolerance, 0, 100),
            observed=self._observed(observed),
        )
        self.notes = result.notes
        return result

    def suggest(
        self,
        targets: Any,
        candidates: Any,
        *,
        budget_gpu_hours: float | None = None,
        top: int | None = None,
        device: str = REFERENCE_DEVICE,
        observed: Any = None,
        new_level: bool = False,
    ) -> Suggestion:
        """Which runs to collect next: the candidate runs ranked by how much measuring each
        would sharpen the predictions of the targets, per GPU hour, and a batch chosen
        within ``budget_gpu_hours`` (GPU hours on ``device``) of at most ``top`` runs, as
        ``qbayes suggest`` does (docs/suggest.md).

        ``targets``: a polars or pandas DataFrame in the query layout (fp16_ppl optional;
        optional ``weight``); ``candidates``: runs you could make, in the query layout
        without fp16_ppl (optional ``gpu_hours``, ``eval_tokens``). A collection grid
        crossed with a manifest is ``qbayes.suggest.ranking.grid_candidates``. Returns a
        `qbayes.api.suggest.Suggestion` (``.table`` is what ``--output`` writes, in the
        kind of DataFrame ``candidates`` was).

        Examples:
            >>> import polars as pl, qbayes
            >>> targets = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.6],
            ...                         "format": ["Q3_K_M"], "eval_set": ["wikitext2"]})
            >>> runs = pl.DataFrame({"family": ["Qwen2.5"] * 2, "model": ["Qwen2.5-0.5B", "Qwen2.5-7B"],
            ...                      "params_b": [0.5, 7.6], "format": ["Q3_K_M"] * 2, "eval_set": ["wikitext2"] * 2})
            >>> s = qbayes.load(n_draws=200).suggest(targets, runs, top=1)
            >>> s.chosen.height
            1
        """
        raw_targets = as_polars(targets, "targets")
        raw_candidates = as_polars(candidates, "candidates")
        checks.flag("new_level", new_level)
        if budget_gpu_hours is not None:
            checks.number("budget_gpu_hours", budget_gpu_hours)
        if top is not None:
            checks.integer("top", top, 1)
        result = suggest_table(
            Predictor(self.fit, n_draws=self.n_draws, seed=self.seed),
            raw_targets,
            raw_candidates,
            targets_where="targets",
            candidates_where="candidates",
            budget_gpu_hours=budget_gpu_hours,
            top=top,
            device=device,
            new_level=new_level,
            observed=self._observed(observed),
        )
        self.notes = result.notes
        result.table = like(result.table, candidates)
        return result

    @staticmethod
    def _grid(formats, methods, w_bits, group_sizes, eval_set, include_fp16, overhead_gb, context) -> Grid:
        """The options' grid, its arguments checked as the command line's option types check them."""
        return make_grid(
            formats=checks.names("formats", formats),
            methods=checks.names("methods", methods),
            w_bits=checks.numbers_of("w_bits", w_bits),
            group_sizes=checks.group_sizes("group_sizes", group_sizes),
            eval_set=checks.text("eval_set", eval_set),
            include_fp16=checks.flag("include_fp16", include_fp16),
            overhead_gb=checks.number("overhead_gb", overhead_gb, 0),
            context=None if context is None else checks.integer("context", context, 1),
        )

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

    Examples:
        >>> import qbayes
        >>> m = qbayes.load(n_draws=500)
        >>> type(m.fit.idata).__name__  # the posterior, for arviz_plots and arviz_stats
        'DataTree'
    """
    if path is not None:
        checks.path("path", path)
    if accuracy_path is not None:
        checks.path("accuracy_path", accuracy_path)
    checks.integer("seed", seed)
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

    Examples:
        >>> import polars as pl, qbayes
        >>> cands = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.0],
        ...                       "fp16_ppl": [6.85]})
        >>> options = qbayes.choose(cands, budget_gb=5, formats=["Q4_K_M", "Q6_K"])
        >>> options.filter(pl.col("rank") == 1).get_column("format").to_list()
        ['Q4_K_M']
    """
    return (model or load()).choose(candidates, budget_gb=budget_gb, **options)


def compare(candidates: Any, first: str, second: str, *, model: Model | None = None, **options: Any) -> Comparison:
    """`Model.compare` with ``model`` (default: the shipped posterior, `load`); ``options``
    are its keywords (``formats``, ``methods``, ``w_bits``, ``group_sizes``, ``tolerance``
    in percent, ...).

    Examples:
        >>> import polars as pl, qbayes
        >>> cands = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.6],
        ...                       "fp16_ppl": [6.85]})
        >>> c = qbayes.compare(cands, "Q4_K_M", "Q6_K", formats=["Q4_K_M", "Q6_K"])
        >>> sorted(c.difference)  # quantiles of Q4_K_M's perplexity minus Q6_K's
        [0.05, 0.25, 0.5, 0.75, 0.95]
    """
    return (model or load()).compare(candidates, first, second, **options)


def suggest_runs(targets: Any, candidates: Any, *, model: Model | None = None, **options: Any) -> Suggestion:
    """`Model.suggest` with ``model`` (default: the shipped posterior, `load`); ``options``
    are its keywords (``budget_gpu_hours``, ``top``, ``device``, ``observed``, ``new_level``).
    (``qbayes.suggest`` is the package that ranks runs, hence the name.)

    Examples:
        >>> import polars as pl, qbayes
        >>> targets = pl.DataFrame({"family": ["Qwen2.5"], "model": ["Qwen2.5-7B"], "params_b": [7.6],
        ...                         "format": ["Q3_K_M"], "eval_set": ["wikitext2"]})
        >>> qbayes.suggest_runs(targets, targets, top=1).table.get_column("chosen").to_list()
        [True]
    """
    return (model or load()).suggest(targets, candidates, **options)

"""``qbayes.load`` and the :class:`Model` it returns: a fitted posterior that predicts
DataFrames, for notebooks and scripts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from qbayes import resources
from qbayes.api.predict import predict_table
from qbayes.errors import QBayesError
from qbayes.model import conditioning, fitfile
from qbayes.model.accuracy import fitfile as accuracy_fitfile
from qbayes.model.accuracy.predict import AccuracyPredictor
from qbayes.model.fitfile import Fit
from qbayes.model.predict import Predictor


def _as_polars(df: Any, what: str) -> tuple[pl.DataFrame, bool]:
    """``df`` as a polars DataFrame, and whether it came as pandas; refuses anything else."""
    if isinstance(df, pl.DataFrame):
        return df, False
    if type(df).__module__.startswith("pandas") and type(df).__name__ == "DataFrame":
        return pl.from_pandas(df), True
    raise QBayesError(f"{what} must be a polars or pandas DataFrame, not {type(df).__name__}")


class Model:
    """A fitted posterior that predicts: the shipped one or a fit file (:func:`load`).

    ``fit`` is the fit itself (``fit.idata``: the ArviZ DataTree of the posterior);
    ``notes`` holds the lines the last :meth:`predict` would print on the command line
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
        (percent accuracy). Bad input raises :class:`qbayes.QBayesError`.

        Example:
            >>> import polars as pl, qbayes
            >>> m = qbayes.load()
            >>> q = pl.DataFrame({"family": ["llama-3"], "model": ["Llama-3-8B"], "params_b": [8.0],
            ...                   "format": ["Q4_K_M"], "eval_set": ["wikitext2"], "fp16_ppl": [6.14]})
            >>> m.predict(q).select("ppl_q05", "ppl_q50", "ppl_q95")  # doctest: +SKIP
        """
        raw, was_pandas = _as_polars(queries, "queries")
        obs = None
        if observed is not None:
            obs_df, _ = _as_polars(observed, "observed")
            obs = conditioning.observed_rows(obs_df, "observed")
        predictor = Predictor(self.fit, n_draws=self.n_draws, seed=self.seed)
        run = predict_table(predictor, raw, where="queries", new_level=new_level, observed=obs, accuracy=self._accuracy)
        self.notes = run.notes
        return run.table.to_pandas() if was_pandas else run.table

    def _accuracy(self, predictor: Predictor) -> AccuracyPredictor:
        path = self.accuracy_path or resources.shipped_accuracy_fit()
        if path is None:
            raise QBayesError(
                "queries name a task, but this qbayes ships no accuracy fit (data/accuracy-fit.nc); "
                "make one with `qbayes fit-accuracy` and pass it as qbayes.load(accuracy_path=...)"
            )
        fit = accuracy_fitfile.load(path)
        if fit.info.ppl_fit.data_hash != predictor.fit.info.data_hash:
            self.notes.append(
                f"note: the accuracy fit was built on perplexity fit {fit.info.ppl_fit.data_hash}; "
                f"degradations now come from {predictor.fit.info.data_hash}"
            )
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
        >>> m.fit.idata  # the ArviZ DataTree of the posterior  # doctest: +SKIP
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

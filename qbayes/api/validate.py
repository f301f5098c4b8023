"""``qbayes.validate`` and ``qbayes.validate_accuracy``: cross-validation by held-out
family, the work behind ``qbayes validate`` (which prints the tables and writes the JSON
and the predictions file). Fits one model per fold: MCMC, minutes at the defaults."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl

from qbayes import resources
from qbayes.api import checks
from qbayes.db.store import load_paths
from qbayes.errors import QBayesError
from qbayes.evaluation import accuracy as acc_cv
from qbayes.evaluation import crossval
from qbayes.evaluation.baselines import BASELINES
from qbayes.evaluation.exceed import CLASSIFIERS
from qbayes.evaluation.summary import ValidationSettings, ValidationSummary
from qbayes.model import fitfile
from qbayes.model.accuracy.fit import AccuracyFitOptions
from qbayes.model.accuracy.rows import paired
from qbayes.model.fit import FitOptions
from qbayes.model.samplers import DEFAULT_SAMPLER, SampleConfig
from qbayes.model.spec import load_spec
from qbayes.model.table import training_table
from qbayes.model.tasks import load as load_tasks
from qbayes.records import to_plain

DEFAULT_MODELS = ("hierarchical", "pooled")
DEFAULT_BASELINES = ("cell_median", "scaling_law_ls", "random_forest")
SCHEME_NAMES = {"lofo": "Leave-one-family-out", "forward": "Forward (from earlier families)"}


def records_table(records: Sequence) -> pl.DataFrame:
    """Records (dataclasses) as a DataFrame, one row each, nested scores as columns; a
    column only some records have (the Bayesian models' convergence) is null for the others."""
    rows = [to_plain(r) for r in records]
    return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


@dataclass
class Validation:
    """What ``qbayes validate`` reports, as DataFrames. Scores are of Δ in nats per token:
    ``n`` rows, ``mdae``/``mae`` (median and mean absolute error of the median), ``cov50``/
    ``cov90`` (share of rows inside the central 50% and 90% intervals), ``crps``.

    Tables: ``overall`` and ``overall_3bits`` (one row per model, all held-out rows or those
    of 3 or more bits), ``per_family`` (per held-out family and model, with the fold fit's
    convergence), ``per_cell`` (per kind of row), ``calibration`` (coverage against nominal
    level), ``gaps`` (MdAE of the first model minus each other's, with a 90% paired
    bootstrap interval), ``brier`` (Brier score of P(Δ > 1 nat) per model and held-out
    family, family "all" for every row, beside the classifiers made for that question),
    ``reveal`` (error and 90% width against revealed rows K; empty unless several K were
    asked) and ``predictions`` (every held-out row with each model's
    predictive quantiles ``delta_q05`` ... ``delta_q95``, what ``--predictions`` writes).
    ``summary`` is the record ``--json`` writes (``summary.to_dict()``); ``reveals`` and
    ``reveal_rule`` are the K values and the rule the rows were revealed by.

    Examples:
        >>> v = qbayes.validate(models=["hierarchical"], baselines=["cell_median"],
        ...                     families=["OPT"], draws=100, tune=100, chains=2)  # doctest: +SKIP
        >>> v.overall.select("model", "mdae", "cov90")  # doctest: +SKIP
    """

    summary: ValidationSummary
    overall: pl.DataFrame
    overall_3bits: pl.DataFrame
    per_family: pl.DataFrame
    per_cell: pl.DataFrame
    calibration: pl.DataFrame
    gaps: pl.DataFrame
    brier: pl.DataFrame
    reveal: pl.DataFrame
    predictions: pl.DataFrame
    reveals: tuple[int, ...] = (0,)
    reveal_rule: str = "nearest4"


def validate(
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    models: Sequence[str] = DEFAULT_MODELS,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    scheme: str = "lofo",
    families: Sequence[str] = (),
    exclude_families: Sequence[str] = (),
    include_suspect: bool = False,
    rows: str | None = None,
    reveals: Sequence[int] = (0,),
    reveal_rule: str = "nearest4",
    draws: int = 500,
    tune: int = 500,
    chains: int = 4,
    seed: int = SampleConfig().seed,
    sampler: str = DEFAULT_SAMPLER,
    target_accept: float = 0.9,
    progress: Callable[[str], None] | None = None,
) -> Validation:
    """Hold out each family in turn (``scheme`` "lofo"), or each family from those released
    before it ("forward"), fit the Bayesian ``models`` (specs under models/) and the
    ``baselines`` on the rest, and score their predictions of Δ (nats per token) for it, as
    ``qbayes validate`` does.

    ``data``: database directories (default: the shipped one); ``families``: hold out only
    these; ``rows``: "published", "collected" or "all" (default: the first model's);
    ``reveals``: rows each held-out model reveals (K; docs/observed.md), picked by
    ``reveal_rule`` ("nearest4" or "rtn"); ``draws``, ``tune``, ``chains``, ``seed``,
    ``sampler``, ``target_accept``: the fold fits' sampling; ``progress`` is called with
    a line per step. Returns a `Validation`.

    Examples:
        >>> v = qbayes.validate(models=["hierarchical"], baselines=["cell_median"],
        ...                     families=["OPT"], draws=100, tune=100, chains=2)  # doctest: +SKIP
        >>> v.per_family  # doctest: +SKIP
    """
    models = checks.names("models", models)
    checks.flag("include_suspect", include_suspect)
    baselines = checks.names("baselines", baselines)
    for b in baselines:
        if b not in BASELINES:
            raise BASELINES.unknown(b)
    checks.choice("scheme", scheme, crossval.SCHEMES)
    checks.choice("reveal_rule", reveal_rule, crossval.REVEAL_RULES)
    if rows is not None:
        checks.choice("rows", rows, ("published", "collected", "all"))
    if isinstance(reveals, (str, bytes)) or not isinstance(reveals, Sequence) or not reveals:
        raise QBayesError(f"reveals must be a non-empty list of integers, not {reveals!r}")
    reveals = sorted({checks.integer("reveals", k, 0) for k in reveals})
    sample = checks.sample_config(
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        target_accept=target_accept,
        progress=False,
        extensions=0,  # fold fits are scored on their predictions, not gated on R-hat
    )
    specs = [load_spec(m) for m in models]
    rows = rows or (specs[0].rows if specs else "published")
    db = load_paths(checks.paths("data", data))
    table = training_table(
        db,
        exclude_families=checks.names("exclude_families", exclude_families),
        include_suspect=include_suspect,
        rows=rows,
    )
    folds = crossval.make_folds(
        table["family"],
        scheme=scheme,
        released=crossval.family_release(db.models),
        only=checks.names("families", families),
    )
    results = crossval.run(
        table,
        bayes_models=models,
        baselines=baselines,
        opts=FitOptions(sampler=sampler, sample=sample),
        folds=folds,
        seed=sample.seed,
        progress=progress or (lambda _: None),
        reveals=reveals,
        reveal_rule=reveal_rule,
        # with the baselines, the classifiers of delta > 1 nat they are compared against
        classifiers=tuple(CLASSIFIERS) if baselines else (),
    )
    settings = ValidationSettings(
        scheme=scheme,
        draws=sample.draws,
        tune=sample.tune,
        chains=sample.chains,
        seed=sample.seed,
        sampler=sampler,
        target_accept=sample.target_accept,
        rows=table.height,
        row_kind=rows,
        families=tuple(f.family for f in folds),
        folds={f.family: f.train for f in folds},
    )
    reference = crossval.reveal_name(models[0], reveals[-1], reveals) if models else None
    summary = crossval.summarise(results, settings, reference=reference)
    return Validation(
        summary=summary,
        overall=records_table(summary.overall),
        overall_3bits=records_table(summary.overall_3bits),
        per_family=records_table(summary.per_family),
        per_cell=records_table(summary.per_cell),
        calibration=records_table(summary.calibration),
        gaps=records_table(summary.gaps),
        brier=records_table(summary.brier),
        reveal=records_table(crossval.reveal_scores(results, reveals) if reveals != [0] else []),
        predictions=crossval.predictions_table(results),
        reveals=tuple(reveals),
        reveal_rule=reveal_rule,
    )


@dataclass
class AccuracyValidation:
    """What ``qbayes validate --target accuracy`` reports, as DataFrames of scores in
    accuracy points (percent): ``per_task`` (task "overall" for all rows) and
    ``per_family`` (the held-out family), each with model, ``n``, ``mdae``, ``cov90``,
    ``crps``; ``convergence``: held-out family -> the fold fit's convergence line;
    ``record`` is what ``--json`` writes (``record.to_dict()``).

    Examples:
        >>> v = qbayes.validate_accuracy(families=["LLaMA-2"], draws=100, tune=100)  # doctest: +SKIP
        >>> v.per_task.filter(pl.col("task") == "overall")  # doctest: +SKIP
    """

    record: acc_cv.AccuracyValidation
    per_task: pl.DataFrame
    per_family: pl.DataFrame
    convergence: dict[str, str]


def validate_accuracy(
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    scheme: str = "lofo",
    families: Sequence[str] = (),
    draws: int = 500,
    tune: int = 500,
    chains: int = 4,
    seed: int = SampleConfig().seed,
    sampler: str = DEFAULT_SAMPLER,
    target_accept: float = 0.9,
    progress: Callable[[str], None] | None = None,
) -> AccuracyValidation:
    """Cross-validate the task-accuracy model (docs/accuracy.md) by held-out family, with the
    shipped perplexity fit giving each configuration's Δ, as ``qbayes validate --target
    accuracy`` does; scores in accuracy points. Arguments as `validate`.

    Examples:
        >>> v = qbayes.validate_accuracy(families=["LLaMA-2"], draws=100, tune=100)  # doctest: +SKIP
        >>> v.per_family  # doctest: +SKIP
    """
    checks.choice("scheme", scheme, crossval.SCHEMES)
    sample = checks.sample_config(
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        target_accept=target_accept,
        progress=False,
        extensions=0,  # fold fits are scored on their predictions, not gated on R-hat
    )
    db = load_paths(checks.paths("data", data))
    tasks = load_tasks()
    folds = crossval.make_folds(
        paired(db, tasks)["family"],
        scheme=scheme,
        released=crossval.family_release(db.models),
        only=checks.names("families", families),
    )
    ppl_path = resources.shipped_fit()
    if ppl_path is None:
        raise QBayesError("accuracy validation needs the shipped perplexity fit (data/default-fit.nc)")
    results = acc_cv.run(
        db,
        tasks,
        fitfile.load(ppl_path),
        f"data/{ppl_path.name}",
        folds,
        AccuracyFitOptions(sampler=sampler, sample=sample),
        progress=progress or (lambda _: None),
    )
    record = acc_cv.summarise(results, scheme, folds)
    plain = record.to_dict()
    return AccuracyValidation(
        record=record,
        per_task=pl.DataFrame(plain["per_task"]),
        per_family=pl.DataFrame(plain["per_family"]),
        convergence=record.convergence,
    )

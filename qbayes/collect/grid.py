"""Grid files: ``collectors/NAME.toml`` parsed into frozen dataclasses.

A grid says what to measure: which methods with which formats, which calibration and
evaluation texts, the evaluation protocol (token budget, sequence length) and the
feature settings. Every table and key is checked: an unknown key or a value of the
wrong type is a :class:`~qbayes.errors.QBayesError` naming the file and the key.

Evaluation and calibration sets are the database's names (``wikitext2``, ``c4``, ``ptb``,
``pile`` and the built-in texts); where a set's text comes from (a local file, the hub
cache) is the run's business (``Grid.text_files``, from ``--eval-text``/``--calib-text``
and the preflight), not the grid file's.

Method tables (``[methods.NAME]``) hold ``formats`` (spec strings, see
:mod:`qbayes.formats`; a spec that does not parse, such as ``int9``, fails as its
own configuration while the others run), optionally ``calib`` (a subset of
``calibration.sets``) and method-specific options, which the method itself parses into
its own options dataclass (see :mod:`qbayes.collect.methods`).

An optional ``[tasks]`` table names lm-evaluation-harness tasks every measured model is
also scored on (:mod:`qbayes.collect.tasks_eval`); its ``include`` directories of local
task files are relative to the grid file.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from qbayes.collect.corpora import TextFile
from qbayes.db.schema import CALIB_SETS, EVAL_SETS
from qbayes.errors import QBayesError, suggest, unknown

DTYPES = {"float32": ("fp32", 32), "bfloat16": ("bf16", 16), "float16": ("fp16", 16)}


@dataclass(frozen=True)
class EvalSettings:
    sets: tuple[str, ...] = ("shakespeare", "bible", "pystdlib")
    tokens: int = 65536  # token budget per evaluation text; 0: the protocol's own (see protocol)
    seq_len: int = 512
    batch_size: int = 8
    dtype: str = "float32"  # the model is evaluated (and quantized) in this dtype
    kl: bool = True  # KL divergence of each quantized model from the unquantized one


@dataclass(frozen=True)
class CalibSettings:
    sets: tuple[str, ...] = ("shakespeare", "pystdlib", "noise")
    samples: int = 64  # sequences of seq_len tokens
    seq_len: int = 512


@dataclass(frozen=True)
class SelfCheckSettings:
    tol_nats: float = 0.01  # |nll(identity config) - nll(baseline)| allowed
    tokens: int = 8192  # evaluated on the first evaluation text


@dataclass(frozen=True)
class EfficiencySettings:
    decode_tokens: int = 64  # tokens generated to time decoding; 0 turns it off
    prompt_tokens: int = 32


@dataclass(frozen=True)
class FeatureSettings:
    landscape: bool = True
    landscape_eval: tuple[str, ...] = ("shakespeare",)
    tokens: int = 2048  # tokens of the loss used for Hessian and radial features
    seq_len: int = 256
    hutchinson_samples: int = 16
    power_iters: int = 20
    radii: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1)
    radial_directions: int = 4
    outliers: bool = True
    outlier_calib: tuple[str, ...] = ("shakespeare", "bible", "pystdlib", "noise")
    outlier_tokens: int = 4096
    outlier_threshold: float = 6.0  # channel max |a| / median channel max above this: outlier
    per_layer_sqnr: bool = True


@dataclass(frozen=True)
class TaskSettings:
    """Downstream tasks scored through lm-evaluation-harness on every model the run
    measures (:mod:`qbayes.collect.tasks_eval`); no names, no task evaluation."""

    names: tuple[str, ...] = ()  # lm-eval task, group or tag names (a tag runs its tasks)
    shots: int = 0  # few-shot examples (a task whose definition fixes 0 keeps 0)
    limit: int = 0  # items per task; 0: every item (a limit is for smoke runs: rows say n_items)
    batch_size: int = 8
    bootstrap_iters: int = 1000  # lm-eval's bootstrap for metrics without a closed-form standard error
    include: tuple[str, ...] = ()  # directories of local task YAML files (lm-eval's include_path)


@dataclass(frozen=True)
class MethodSpec:
    """One ``[methods.NAME]`` table. ``options`` are the method-specific keys, as
    (key, value) pairs; the method turns them into its options dataclass."""

    name: str
    formats: tuple[str, ...]  # format specs; checked per configuration, so a bad one fails alone
    calib: tuple[str, ...] | None = None  # None: every calibration set (if it needs any)
    options: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class Grid:
    name: str
    methods: tuple[MethodSpec, ...]
    eval: EvalSettings = field(default_factory=EvalSettings)
    calibration: CalibSettings = field(default_factory=CalibSettings)
    self_check: SelfCheckSettings = field(default_factory=SelfCheckSettings)
    efficiency: EfficiencySettings = field(default_factory=EfficiencySettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    tasks: TaskSettings = field(default_factory=TaskSettings)
    text_files: tuple[TextFile, ...] = ()  # where sets' texts are read from (else built in / hub cache)

    def select(
        self,
        *,
        methods=None,
        formats=None,
        calib=None,
        evals=None,
        text_files=(),
        seq_len: int | None = None,
        tasks=None,
        task_include=(),
    ) -> Grid:
        """The grid narrowed (or, for formats, replaced) by command-line choices.
        ``text_files`` give sets' texts; a set so given that the grid does not use is added
        (an evaluation set to ``eval.sets``, a calibration set to every calibrated method).
        ``seq_len`` replaces the evaluation and calibration sequence lengths. ``tasks``
        replace the grid's lm-eval tasks; ``task_include`` adds directories of local task
        files (made absolute, so workers elsewhere read the same ones)."""
        specs = self.methods
        if methods:
            known = {m.name for m in specs}
            for name in methods:
                if name not in known:
                    if not formats:
                        raise QBayesError(
                            f"method '{name}' has no table in grid '{self.name}'"
                            f"{suggest(name, known)}; give its formats with --formats"
                        )
                    specs = specs + (MethodSpec(name, ()),)
            specs = tuple(m for m in specs if m.name in methods)
        if formats:
            specs = tuple(dataclasses.replace(m, formats=tuple(formats)) for m in specs)
        out = dataclasses.replace(self, methods=specs)
        if calib:
            _check_names(calib, CALIB_SETS, "calibration set")
            specs = tuple(dataclasses.replace(m, calib=None) for m in out.methods)
            out = dataclasses.replace(
                out, methods=specs, calibration=dataclasses.replace(self.calibration, sets=tuple(calib))
            )
        if evals:
            _check_names(evals, EVAL_SETS, "evaluation set")
            out = dataclasses.replace(out, eval=dataclasses.replace(self.eval, sets=tuple(evals)))
        for f in text_files:
            if f.purpose == "eval" and f.name not in out.eval.sets:
                out = dataclasses.replace(out, eval=dataclasses.replace(out.eval, sets=out.eval.sets + (f.name,)))
            if f.purpose == "calib" and f.name not in out.calibration.sets:
                specs = tuple(dataclasses.replace(m, calib=m.calib + (f.name,)) if m.calib else m for m in out.methods)
                out = dataclasses.replace(
                    out,
                    methods=specs,
                    calibration=dataclasses.replace(out.calibration, sets=out.calibration.sets + (f.name,)),
                )
        if text_files:
            given = {(f.purpose, f.name) for f in text_files}
            kept = tuple(f for f in self.text_files if (f.purpose, f.name) not in given)
            out = dataclasses.replace(out, text_files=kept + tuple(text_files))
        if seq_len is not None:
            if seq_len <= 0:
                raise QBayesError(f"--seq-len must be positive, got {seq_len}")
            out = dataclasses.replace(
                out,
                eval=dataclasses.replace(out.eval, seq_len=seq_len),
                calibration=dataclasses.replace(out.calibration, seq_len=seq_len),
            )
            _check_grid(out, "--seq-len")
        if tasks or task_include:
            names = tuple(tasks) if tasks else out.tasks.names
            added = tuple(str(Path(d).resolve()) for d in task_include)
            include = tuple(dict.fromkeys(out.tasks.include + added))
            out = dataclasses.replace(out, tasks=dataclasses.replace(out.tasks, names=names, include=include))
        return out


SECTIONS = {
    "eval": EvalSettings,
    "calibration": CalibSettings,
    "self_check": SelfCheckSettings,
    "efficiency": EfficiencySettings,
    "features": FeatureSettings,
    "tasks": TaskSettings,
}


def read_toml(path: str | Path, what: str) -> dict:
    """The tables of a TOML file; a missing file or invalid TOML is a :class:`QBayesError`
    naming the file (``what`` says what kind of file was expected, e.g. "grid file")."""
    path = Path(path)
    if not path.is_file():
        raise QBayesError(f"{path}: no such {what}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise QBayesError(f"{path}: not valid TOML ({exc})") from None


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file."""
    path = Path(path)
    grid = grid_from_dict(read_toml(path, "grid file"), name=path.stem, where=str(path))
    # task directories are named relative to the grid file
    include = tuple(str((path.parent / d).resolve()) for d in grid.tasks.include)
    return dataclasses.replace(grid, tasks=dataclasses.replace(grid.tasks, include=include))


def grid_from_dict(data: dict, *, name: str, where: str) -> Grid:
    for key in data:
        if key not in SECTIONS and key != "methods":
            raise QBayesError(f"{where}: unknown table [{key}]{suggest(key, [*SECTIONS, 'methods'])}")
    sections = {key: build_table(cls, data.get(key, {}), f"{where} [{key}]") for key, cls in SECTIONS.items()}
    methods = data.get("methods", {})
    if not isinstance(methods, dict) or not methods:
        raise QBayesError(f"{where}: needs at least one [methods.NAME] table")
    specs = tuple(_method_spec(n, t, f"{where} [methods.{n}]") for n, t in methods.items())
    grid = Grid(name=name, methods=specs, **sections)
    _check_grid(grid, where)
    return grid


def _method_spec(name: str, table: dict, where: str) -> MethodSpec:
    if not isinstance(table, dict):
        raise QBayesError(f"{where}: must be a table")
    table = dict(table)
    formats = table.pop("formats", None)
    if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
        raise QBayesError(f"{where}: 'formats' must be a list of format strings")
    fmts = tuple(formats)
    calib = table.pop("calib", None)
    if calib is not None:
        if not isinstance(calib, list) or not all(isinstance(c, str) for c in calib):
            raise QBayesError(f"{where}: 'calib' must be a list of calibration set names")
        calib = tuple(calib)
    options = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in table.items()))
    return MethodSpec(name, fmts, calib, options)


def _check_names(names, allowed, what: str, where: str = "") -> None:
    for n in names:
        if n not in allowed:
            exc = unknown(what, n, allowed)
            raise QBayesError(f"{where}: {exc}" if where else str(exc))


def _check_grid(grid: Grid, where: str) -> None:
    _check_names(grid.eval.sets, EVAL_SETS, "evaluation set", where)
    _check_names(grid.calibration.sets, CALIB_SETS, "calibration set", where)
    _check_names(grid.features.landscape_eval, EVAL_SETS, "evaluation set", where)
    _check_names(grid.features.outlier_calib, CALIB_SETS, "calibration set", where)
    if grid.eval.dtype not in DTYPES:
        raise unknown("dtype", grid.eval.dtype, DTYPES)
    for m in grid.methods:
        for c in m.calib or ():
            if c not in grid.calibration.sets:
                raise QBayesError(f"{where} [methods.{m.name}]: calib '{c}' is not in calibration.sets")
    if grid.eval.tokens < 0:
        raise QBayesError(f"{where}: eval.tokens must be 0 (the protocol's own) or positive, got {grid.eval.tokens}")
    positive = {
        "eval.seq_len": grid.eval.seq_len,
        "eval.batch_size": grid.eval.batch_size,
        "calibration.samples": grid.calibration.samples,
        "calibration.seq_len": grid.calibration.seq_len,
        "features.tokens": grid.features.tokens,
        "features.seq_len": grid.features.seq_len,
        "self_check.tokens": grid.self_check.tokens,
        "tasks.batch_size": grid.tasks.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise QBayesError(f"{where}: {key} must be positive, got {value}")
    for key, value in {
        "tasks.shots": grid.tasks.shots,
        "tasks.limit": grid.tasks.limit,
        "tasks.bootstrap_iters": grid.tasks.bootstrap_iters,
    }.items():
        if value < 0:
            raise QBayesError(f"{where}: {key} must be 0 or more, got {value}")
    if 0 < grid.eval.tokens < grid.eval.seq_len + 1:
        raise QBayesError(f"{where}: eval.tokens must exceed eval.seq_len (or be 0: the protocol's own)")


def build_table(cls, table, where: str):
    """A settings dataclass from a TOML table, checking keys and value types."""
    if not isinstance(table, dict):
        raise QBayesError(f"{where}: must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in table.items():
        if key not in names:
            raise QBayesError(f"{where}: unknown key '{key}'{suggest(key, names)}; known: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where} {key}")
    return cls(**kwargs)


def _coerce(value, hint, where: str):
    """Check ``value`` against a simple type hint (bool, int, float, str, tuple[X, ...])."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise QBayesError(f"{where}: must be a list")
        return tuple(_coerce(v, inner, where) for v in value)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise QBayesError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def build_options(cls, options: tuple[tuple[str, object], ...], where: str):
    """A method's options dataclass from a :class:`MethodSpec`'s option pairs."""
    return build_table(cls, dict(options), where)

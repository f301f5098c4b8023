"""Everything a collection run needs, checked before any model is loaded.

:func:`preflight` looks at every model directory, method, format, device, text and
optional package the request uses and either returns the request with every dataset
text resolved to a local file (fetched into the hub cache first when ``download``) and
its lm-eval task names resolved (:func:`qbayes.collect.tasks_eval.check`), or
raises :class:`PreflightError` listing each missing piece and how to get it. Nothing is
written either way.

Whether a method can quantize a model's layers (their type, their widths against a
group size) is checked on the model's skeleton, built from its ``config.json`` on the
meta device without its weights. What can only be known with the weights or the
tokenizer running (a text too short for one window, a failed self-check, out of memory)
is left to the run, which records it as a failed configuration and exits 1.

On a CUDA run the memory plan (:mod:`qbayes.collect.memory`) of each model is checked
against the visible devices, and a run whose largest step cannot fit is refused with the
figures and the fix. With a remote executor (``ray``) the work runs elsewhere: the
driver may have no GPU at all, so neither CUDA, nor the memory plan, nor the packages of
CUDA-only methods are checked here; each worker checks them where the work runs (the
runner records what it lacks as failures).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from qbayes.collect import corpora, methods, tasks_eval, texts
from qbayes.collect.corpora import TextFile
from qbayes.collect.executors.base import CollectRequest
from qbayes.collect.grid import Grid, build_options
from qbayes.collect.memory import cuda_capacity, plan
from qbayes.collect.modelio import TOKENIZER_FILES, check_model_dir, skeleton
from qbayes.errors import QBayesError
from qbayes.formats import parse_format

# config.json keys that give a model's context length, by architecture
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


@dataclass(frozen=True)
class Missing:
    what: str  # the piece: "model x", "method y", "evaluation text z"
    problem: str  # what is wrong and how to fix it


class PreflightError(QBayesError):
    def __init__(self, missing: list[Missing]):
        self.missing = missing
        lines = "\n".join(f"  - {m.what}: {m.problem}" for m in missing)
        super().__init__(f"collection cannot run; nothing was loaded or written:\n{lines}")


def preflight(request: CollectRequest, *, download: bool = False, remote: bool = False) -> CollectRequest:
    """The request with its texts resolved, or PreflightError naming what is missing;
    ``remote``: the work runs on other machines (see the module docstring)."""
    missing: list[Missing] = []
    if not remote:
        missing += _device(request.device)
    missing += _methods(request.grid, request.device, remote=remote)
    files, text_missing = _texts(request.grid, download=download)
    missing += text_missing
    missing += _overlaps(request.grid, files)
    task_settings, task_problems = tasks_eval.check(request.grid.tasks)
    missing += [Missing(p.what, p.problem) for p in task_problems]
    for model in request.models:
        found = _model(model.path, request.grid)
        missing += found
        if not found and not remote and request.device == "cuda":
            missing += _memory(model.path, request.grid, *cuda_capacity())
    if missing:
        raise PreflightError(missing)
    grid = dataclasses.replace(request.grid, text_files=tuple(files.values()), tasks=task_settings)
    return dataclasses.replace(request, grid=grid)


def _device(device: str) -> list[Missing]:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return [
                Missing(
                    "--device cuda",
                    f"no CUDA device is available (torch {torch.__version__}, built "
                    f"{'with' if torch.version.cuda else 'without'} CUDA)",
                )
            ]
    return []


def _memory(path: Path, grid: Grid, capacity: int, devices: int) -> list[Missing]:
    """The model's memory plan against ``devices`` CUDA devices of ``capacity`` bytes."""
    if not devices:
        return []
    memory = plan(skeleton(path), grid, [m.name for m in grid.methods if m.name in methods.REGISTRY])
    problem = memory.problem(capacity, devices)
    return [Missing(f"model {path}", problem)] if problem else []


def _methods(grid: Grid, device: str, *, remote: bool = False) -> list[Missing]:
    out = []
    for spec in grid.methods:
        try:
            method = methods.get(spec.name)
            build_options(method.options_type, spec.options, f"[methods.{spec.name}]")
        except QBayesError as exc:
            out.append(Missing(f"method '{spec.name}'", str(exc)))
            continue
        if device not in method.devices:
            out.append(
                Missing(
                    f"method '{spec.name}'",
                    f"runs on {', '.join(method.devices)} only, this run is on "
                    f"{device}: leave it out (--methods) or use --device "
                    f"{method.devices[0]}",
                )
            )
        # a CUDA-only backend lives in the GPU nodes' environment, not necessarily the driver's
        reason = None if remote and "cpu" not in method.devices else method.unavailable()
        if reason:
            out.append(Missing(f"method '{spec.name}'", reason))
        for spec_text in spec.formats:
            try:
                problem = method.format_problem(parse_format(spec_text))
            except QBayesError as exc:
                problem = str(exc)
            if problem:
                out.append(Missing(f"method '{spec.name}', format '{spec_text}'", problem))
    return out


def used_texts(grid: Grid) -> list[tuple[str, str]]:
    """(purpose, name) of every text the grid reads, in order, once each."""
    used = [("eval", e) for e in grid.eval.sets]
    for spec in grid.methods:
        if spec.name in methods.REGISTRY and methods.get(spec.name).needs_calibration:
            used += [("calib", c) for c in (spec.calib or grid.calibration.sets)]
    if grid.features.landscape:
        used += [("eval", e) for e in grid.features.landscape_eval]
    if grid.features.outliers:
        used += [("calib", c) for c in grid.features.outlier_calib]
    return list(dict.fromkeys(used))


def _texts(grid: Grid, *, download: bool) -> tuple[dict[tuple[str, str], TextFile], list[Missing]]:
    given = {(f.purpose, f.name): f for f in grid.text_files}
    files: dict[tuple[str, str], TextFile] = {}
    out = []
    for purpose, name in used_texts(grid):
        what = f"{'evaluation' if purpose == 'eval' else 'calibration'} text '{name}'"
        if name in texts.SOURCES:
            try:
                texts.load_text(name, "eval" if purpose == "eval" else "calib")
            except QBayesError as exc:
                out.append(Missing(what, str(exc)))
            continue
        if importlib.util.find_spec("datasets") is None:
            out.append(Missing(what, "reading it needs the datasets package: pip install -e '.[collect]'"))
            continue
        try:
            f = given.get((purpose, name)) or _hub_file(name, purpose, download)
            corpora.read_rows(f)
        except QBayesError as exc:
            out.append(Missing(what, str(exc)))
            continue
        files[(purpose, name)] = f
    return files, out


def _hub_file(name: str, purpose: str, download: bool) -> TextFile:
    c = corpora.CORPORA[name]
    option = "--eval-text" if purpose == "eval" else "--calib-text"
    hub = c.hub_file(purpose)
    if hub is None:
        raise QBayesError(f"no hub source is known for it: give its text with {option} {name}=PATH")
    try:
        path = corpora.hub_path(hub, download=download)
    except QBayesError as exc:
        fix = (
            ""
            if download
            else (
                f"; fetch it with --download, or give a local copy with {option} {name}=PATH "
                f"(the {c.splits[purpose]} split as parquet, JSON lines or plain text)"
            )
        )
        raise QBayesError(f"{exc}{fix}") from None
    return TextFile(purpose, name, path, hub.describe())


def _overlaps(grid: Grid, files: dict[tuple[str, str], TextFile]) -> list[Missing]:
    """Calibration texts that share passages with an evaluation text. Built-in texts are
    split by document and hub sets by split, so only pairs with a user's file are read."""
    given = {(f.purpose, f.name) for f in grid.text_files}
    used = used_texts(grid)
    evals = [n for p, n in used if p == "eval"]
    calibs = [n for p, n in used if p == "calib"]
    out = []
    for c in calibs:
        for e in evals:
            if ("calib", c) not in given and ("eval", e) not in given:
                continue
            try:
                a, b = _rows("eval", e, files), _rows("calib", c, files)
            except QBayesError:
                continue  # already reported as missing
            shared, example = corpora.overlap(a, b)
            if shared:
                out.append(
                    Missing(
                        f"calibration text '{c}'",
                        f"shares {shared} passage(s) with evaluation text '{e}' (e.g. \"{example}...\"): "
                        "calibrating on evaluation text is refused; calibrate on another split or text",
                    )
                )
    return out


def _rows(purpose: str, name: str, files: dict[tuple[str, str], TextFile]):
    if name in texts.SOURCES:
        return [texts.load_text(name, "eval" if purpose == "eval" else "calib")]
    if (purpose, name) not in files:
        raise QBayesError("unresolved")
    return corpora.read_rows(files[(purpose, name)])


def _model(path: Path, grid: Grid) -> list[Missing]:
    what = f"model {path}"
    try:
        p = check_model_dir(path)
    except QBayesError as exc:
        return [Missing(what, str(exc))]
    out = []
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        out.append(
            Missing(
                what,
                f"has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save one beside the "
                "weights with tokenizer.save_pretrained(DIR)",
            )
        )
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return out + [Missing(what, f"config.json is unreadable ({exc})")]
    context = next((config[k] for k in CONTEXT_KEYS if isinstance(config.get(k), int)), None)
    if context is not None:
        lengths = {"eval.seq_len": grid.eval.seq_len}
        if (
            any(m.name in methods.REGISTRY and methods.get(m.name).needs_calibration for m in grid.methods)
            or grid.features.outliers
        ):
            lengths["calibration.seq_len"] = grid.calibration.seq_len
        if grid.features.landscape:
            lengths["features.seq_len"] = grid.features.seq_len
        for key, value in lengths.items():
            if value > context:
                out.append(
                    Missing(
                        what,
                        f"{key} {value} is longer than its context of {context} tokens (config.json "
                        f"{next(k for k in CONTEXT_KEYS if config.get(k) == context)}): use "
                        f"--seq-len {context} or a grid with shorter sequences",
                    )
                )
    return out + _fits(p, grid)


def _fits(path: Path, grid: Grid) -> list[Missing]:
    """The grid's methods and formats that cannot quantize this model's layers."""
    try:
        bones = skeleton(path)
    except QBayesError as exc:
        return [Missing(f"model {path}", str(exc))]
    out = []
    for spec in grid.methods:
        if spec.name not in methods.REGISTRY:
            continue  # reported with the methods
        method = methods.get(spec.name)
        problem = method.model_problem(bones)
        if problem:
            out.append(Missing(f"model {path}, method '{spec.name}'", problem))
            continue
        for spec_text in spec.formats:
            try:
                problem = method.model_format_problem(bones, parse_format(spec_text))
            except QBayesError:
                continue  # reported with the methods
            if problem:
                out.append(Missing(f"model {path}, method '{spec.name}', format '{spec_text}'", problem))
    return out

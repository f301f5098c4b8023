"""The collection run: baseline, features and every configuration of a grid, in steps.

A run is a list of steps; each step is skipped when its rows are already in the shard
(unless ``force``), runs otherwise, and is followed by an atomic save. A step that fails
(bad format for a backend, unsupported model type, missing package, empty text, out of
memory, a failed self-check, any exception) becomes a row in the ``failures`` table with
a clear message, and the run goes on with the next step.

Order: load the model (failure here, out of memory included, is recorded and raised as
:class:`ModelNotLoaded`: nothing else can run), the unquantized baseline on every
evaluation text (and on the grid's lm-eval tasks, if any: :mod:`qbayes.collect.tasks_eval`),
the features, then the quantized configurations (method x format x calibration set), each
evaluated on every evaluation text and task. Before a method's first configuration runs, its
self-check must reproduce the baseline loss.

Memory: one base model stays loaded; each configuration quantizes one copy of it, which
is freed (cycles collected, CUDA's cache emptied) after every step, so the next starts
from the base model alone. On CUDA the run is checked against its memory plan
(:mod:`qbayes.collect.memory`) before the model loads, and a model whose steps do not
fit one device is spread over all visible devices.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from qbayes.collect import methods, protocol
from qbayes.collect.evaluate import EvalResult, decode_tokens_per_s, evaluate
from qbayes.collect.features import FeatureSteps
from qbayes.collect.grid import DTYPES, build_options
from qbayes.collect.memory import cuda_capacity, plan, spread_needed
from qbayes.collect.methods.base import Method, Quantized, QuantizeJob
from qbayes.collect.modelio import (
    ARCH_INFO,
    LoadedModel,
    LoadOutOfMemory,
    load_model,
    model_bytes,
    param_counts,
    read_train_info,
    release_memory,
    skeleton,
)
from qbayes.collect.plan import CollectOptions, Config, Step, stage
from qbayes.collect.provenance import Provenance, now
from qbayes.collect.shard import Shard
from qbayes.collect.tasks_eval import TaskSteps
from qbayes.errors import QBayesError
from qbayes.formats import Format


@dataclass
class RunSummary:
    run_id: str
    shard: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class Collector:
    def __init__(self, opts: CollectOptions, console: Console | None = None):
        self.opts = opts
        self.grid = opts.grid
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.device = _device(opts.device)
        self.prov = Provenance.new(self.device, opts.seed)
        self.shard = Shard(opts.out)
        self.name = opts.name or Path(opts.model_path).resolve().name
        self.loaded: LoadedModel | None = None
        self.summary = RunSummary(self.prov.run_id, Path(opts.out))
        self.baselines: dict[str, EvalResult] = {}
        self.base_bytes = 0
        self.base_decode: float | None = None
        self._windows: dict[tuple, torch.Tensor] = {}
        self._self_checks: dict[str, str | None] = {}  # method -> failure message (None: passed)
        self._self_check_notes: dict[str, str] = {}
        self.tasks = TaskSteps(self)

    # --- public ---------------------------------------------------------------------

    def run(self) -> RunSummary:
        configs = self.plan()  # unknown method names are hard errors, before anything runs
        self.load()
        steps = (
            self.baseline_steps()
            + self.tasks.baseline_steps()
            + FeatureSteps(self).steps()
            + [self.config_step(c) for c in configs]
        )
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, disable=not self.opts.progress) as bar:
            task = bar.add_task(f"collect {self.name}", total=len(steps))
            for step in steps:
                bar.update(task, description=f"{self.name}: {step.label}")
                self.execute(step)
                bar.advance(task)
        return self.summary

    def plan(self) -> list[Config]:
        configs = []
        for spec in self.grid.methods:
            method = methods.get(spec.name)
            options = build_options(method.options_type, spec.options, f"[methods.{spec.name}]")
            calibs = (spec.calib or self.grid.calibration.sets) if method.needs_calibration else (None,)
            for fmt in spec.formats:
                for calib in calibs:
                    configs.append(Config.make(method, fmt, calib, options))
        return configs

    # --- steps ----------------------------------------------------------------------

    def execute(self, step: Step) -> None:
        if not self.opts.force and step.done():
            self.summary.skipped.append(step.label)
            return
        try:
            result = step.run()
        except (torch.OutOfMemoryError, MemoryError) as exc:
            self.fail(step.label, step.stage, "OutOfMemory", f"out of memory: {_short(exc)}")
        except Exception as exc:  # one configuration's failure must not stop the run
            stage = getattr(exc, "stage", step.stage)
            self.fail(step.label, stage, getattr(exc, "error_type", type(exc).__name__), _short(exc), exc)
        else:
            self.summary.ran.append(step.label)
            if result:
                self.console.print(f"  {step.label}: {result}", highlight=False)
        release_memory(self.device)  # the step's quantized copy (or what an error left) goes here
        self.shard.save()

    def fail(self, config: str, stage: str, error_type: str, message: str, exc=None) -> None:
        self.summary.failed.append(f"{config} [{stage}] {error_type}: {message}")
        self.console.print(f"  [red]failed[/red] {config} ({stage}): {error_type}: {message}", highlight=False)
        if exc is not None and not isinstance(exc, (QBayesError, ValueError, SkipConfig)):
            tb = traceback.format_exception(exc, limit=-3)
            message = f"{message}\n{''.join(tb)[-1500:]}"
        self.shard.add_failures(
            [
                {
                    "run_id": self.prov.run_id,
                    "model": self.name,
                    "config": config,
                    "stage": stage,
                    "error_type": error_type,
                    "message": message,
                    "created_at": now(),
                }
            ]
        )

    def load(self) -> None:
        """Load the model (checked against the memory plan first on CUDA); a failure,
        running out of memory included, is recorded and raised as ModelNotLoaded."""
        t0 = time.perf_counter()
        try:
            spread = self.check_memory()
            self.loaded = load_model(
                self.opts.model_path, device=str(self.device), dtype=self.grid.eval.dtype, spread=spread
            )
        except QBayesError as exc:
            error_type = "OutOfMemory" if isinstance(exc, LoadOutOfMemory) else type(exc).__name__
            self.fail("model", "load", error_type, str(exc))
            self.shard.save()
            raise ModelNotLoaded(str(exc)) from exc
        model = self.loaded.model
        total, non_embed = param_counts(model)
        pos, norm, mlp = ARCH_INFO.get(self.loaded.model_type, (None, None, None))
        card = read_train_info(self.opts.model_path)
        notes = (
            f"collected by qbayes-collect from {Path(self.opts.model_path).resolve()}; "
            f"{len(self.loaded.layers())} quantizable layers"
        )
        if card is not None:
            notes += (
                f"; trained here by recipe {card.get('recipe')} ({card.get('recipe_digest')}), seed "
                f"{card.get('seed')}, train loss {card.get('train_loss', float('nan')):.4f}, "
                f"weights sha256 {str(card.get('content_sha256'))[:16]}"
            )
        self.shard.add_models(
            [
                {
                    "family": self.opts.family,
                    "model": self.name,
                    "params_b": total / 1e9,
                    "non_embedding_params_b": non_embed / 1e9,
                    "architecture": self.loaded.model_type,
                    "train_tokens_b": card["train_tokens"] / 1e9 if card else None,
                    "position_encoding": pos,
                    "norm": norm,
                    "mlp": mlp,
                    "reference": "qbayes zoo (collectors/zoo.toml)" if card else None,
                    "notes": notes,
                }
            ]
        )
        self.base_bytes = model_bytes(model)
        self.shard.save()
        self.console.print(
            f"loaded {self.name} ({self.loaded.model_type}, {total / 1e6:.2f}M parameters) "
            f"in {time.perf_counter() - t0:.1f} s",
            highlight=False,
        )

    def check_memory(self) -> bool:
        """On CUDA: refuse (LoadOutOfMemory) a run whose memory plan exceeds the visible
        devices; True when the model must be spread over all of them."""
        capacity, devices = cuda_capacity() if self.device.type == "cuda" else (0, 0)
        if not devices:
            return False
        memory = plan(skeleton(self.opts.model_path), self.grid, [m.name for m in self.grid.methods])
        problem = memory.problem(capacity, devices)
        if problem:
            raise LoadOutOfMemory(f"{self.opts.model_path}: {problem}")
        return devices > 1 and spread_needed(memory, capacity)

    def baseline_steps(self) -> list[Step]:
        steps = []
        for eval_set in self.grid.eval.sets:

            def run(eval_set=eval_set):
                t0 = time.perf_counter()
                res = self.baseline(eval_set)
                if self.base_decode is None and self.grid.efficiency.decode_tokens > 0:
                    self.base_decode = self.decode_speed(self.loaded.model)
                self.shard.add_results(
                    [
                        self.result_row(
                            res,
                            eval_set,
                            method="none",
                            w_kind="float",
                            w_bits=self.eval_bits(),
                            group_size=None,
                            w_bits_eff=float(self.eval_bits()),
                            w_sym=None,
                            dtype_label=DTYPES[self.grid.eval.dtype][0],
                            calib=None,
                            sqnr=None,
                            weight_bytes=self.base_bytes,
                            decode=self.base_decode,
                            note=f"unquantized baseline; {self.text_note(eval_set, res)}",
                            wall_s=time.perf_counter() - t0,
                        )
                    ]
                )
                return f"nll {res.nll:.4f} ± {res.nll_se:.4f}"

            steps.append(
                Step(
                    f"baseline/{eval_set}",
                    "evaluate",
                    lambda e=eval_set: self.shard.has_result(
                        model=self.name,
                        method="none",
                        dtype_label=DTYPES[self.grid.eval.dtype][0],
                        calib_set=None,
                        eval_set=e,
                        seq_len=self.grid.eval.seq_len,
                    ),
                    run,
                )
            )
        return steps

    def config_step(self, cfg: Config) -> Step:
        def done() -> bool:
            if cfg.fmt is None:
                return False
            if not self.tasks.done(
                {"method": cfg.method.label, "dtype_label": cfg.dtype_label, "calib_set": cfg.calib}
            ):
                return False
            return all(
                self.shard.has_result(
                    model=self.name,
                    method=cfg.method.label,
                    dtype_label=cfg.dtype_label,
                    calib_set=cfg.calib,
                    eval_set=e,
                    seq_len=self.grid.eval.seq_len,
                )
                for e in self.grid.eval.sets
            )

        return Step(cfg.label, "quantize", done, lambda: self.run_config(cfg))

    # --- one configuration ----------------------------------------------------------

    def run_config(self, cfg: Config) -> str:
        if cfg.fmt is None:
            raise SkipConfig(cfg.problem, stage="plan", error_type="BadFormat")
        self.check_runnable(cfg.method, cfg.fmt)
        self.self_check(cfg)
        evals = [e for e in self.grid.eval.sets if e in self.baselines or self._baseline_from_shard(e)]
        if not evals:
            raise SkipConfig("no evaluation text has a baseline", stage="evaluate")
        t0 = time.perf_counter()
        q = cfg.method.quantize(self.job(cfg, cfg.fmt))
        t_quant = time.perf_counter() - t0
        decode = None
        if cfg.method.has_kernel and self.grid.efficiency.decode_tokens > 0:
            decode = self.decode_speed(q.model)
        rows, deltas = [], []
        for eval_set in evals:
            t1 = time.perf_counter()
            with stage("evaluate"):
                res = evaluate(
                    q.model,
                    self.windows("eval", eval_set),
                    self.grid.eval.batch_size,
                    reference=self.loaded.model if self.grid.eval.kl else None,
                )
            base = self.baselines.get(eval_set)
            kl = f" (KL {res.kl.mean:.4f})" if res.kl else ""
            deltas.append(f"{eval_set} {res.nll - base.nll:+.4f}{kl}" if base else f"{eval_set}{kl}")
            rows.append(
                self.result_row(
                    res,
                    eval_set,
                    method=cfg.method.label,
                    w_kind=cfg.fmt.kind,
                    w_bits=cfg.fmt.bits,
                    group_size=q.group_size,
                    w_bits_eff=q.w_bits_eff,
                    w_sym=q.w_sym,
                    dtype_label=cfg.dtype_label,
                    calib=cfg.calib,
                    sqnr=q.sqnr.overall(),
                    weight_bytes=self.quant_bytes(q),
                    decode=decode,
                    note=f"{self.note(cfg, q, t_quant)}; {self.text_note(eval_set, res)}",
                    wall_s=t_quant + time.perf_counter() - t1,
                )
            )
        self.shard.add_results(rows)
        self.shard.add_features(FeatureSteps(self).sqnr_rows(cfg, q))
        scored = self.tasks.measure_config(q.model, rows[0], cfg.label)
        tasks = f"; {scored}" if scored else ""
        return f"sqnr {rows[0]['sqnr_db']:.1f} dB, Δnll " + ", ".join(deltas) + tasks

    def check_runnable(self, method: Method, fmt: Format) -> None:
        if self.device.type not in method.devices:
            raise SkipConfig(
                f"method '{method.name}' runs on {', '.join(method.devices)} only; this run is on {self.device.type}",
                stage="plan",
                error_type="DeviceUnsupported",
            )
        reason = method.unavailable()
        if reason:
            raise SkipConfig(reason, stage="plan", error_type="BackendUnavailable")
        reason = method.format_problem(fmt)
        if reason:
            raise SkipConfig(reason, stage="plan", error_type="UnsupportedFormat")
        reason = method.model_problem(self.loaded) or method.model_format_problem(self.loaded, fmt)
        if reason:
            raise SkipConfig(reason, stage="plan", error_type="UnsupportedModel")

    def self_check(self, cfg: Config) -> None:
        """The method's identity configuration must reproduce the baseline loss; run once
        per method and run, before the method's first configuration. Running out of
        memory fails the configuration at hand, not the method."""
        method = cfg.method
        if method.name not in self._self_checks:
            self._self_checks[method.name] = self._run_self_check(cfg)
        message = self._self_checks[method.name]
        if message is not None:
            raise SkipConfig(
                f"not run: method '{method.name}' failed its self-check ({message})",
                stage="self-check",
                error_type="SelfCheckFailed",
            )

    def _run_self_check(self, cfg: Config) -> str | None:
        method = cfg.method
        fmt = method.self_check_format
        label = f"{method.name}/self-check"
        if fmt is None:
            return None
        tol = method.self_check_tol if method.self_check_tol is not None else self.grid.self_check.tol_nats
        eval_set = self.grid.eval.sets[0]
        t0 = time.perf_counter()
        try:
            windows = self.windows("selfcheck", eval_set)
            base = evaluate(self.loaded.model, windows, self.grid.eval.batch_size)
            q = method.quantize(self.job(cfg, fmt))
            got = evaluate(q.model, windows, self.grid.eval.batch_size)
        except (torch.OutOfMemoryError, MemoryError):
            raise  # says nothing of the method: this configuration fails, the next tries again
        except Exception as exc:
            message = f"{fmt.label} run raised {type(exc).__name__}: {_short(exc)}"
            self.fail(label, "self-check", type(exc).__name__, message, exc)
            return message
        delta = got.nll - base.nll
        text = f"{fmt.label}: nll {got.nll:.5f} vs baseline {base.nll:.5f} (Δ {delta:+.2e}, tolerance {tol:g})"
        self._self_check_notes[method.name] = f"self-check {fmt.label} Δnll {delta:+.1e}"
        if not math.isfinite(delta) or abs(delta) > tol:
            self.fail(label, "self-check", "SelfCheckFailed", text)
            return text
        self.console.print(f"  {label}: passed, {text} [{time.perf_counter() - t0:.1f} s]", highlight=False)
        return None

    def job(self, cfg: Config, fmt: Format) -> QuantizeJob:
        calib = None
        if cfg.method.needs_calibration:
            with stage("calibration"):
                calib = self.windows("calib", cfg.calib)
        return QuantizeJob(self.loaded, fmt, cfg.options, calib, self.opts.seed)

    # --- shared pieces --------------------------------------------------------------

    def baseline(self, eval_set: str) -> EvalResult:
        res = evaluate(self.loaded.model, self.windows("eval", eval_set), self.grid.eval.batch_size)
        self.baselines[eval_set] = res
        return res

    def _baseline_from_shard(self, eval_set: str) -> bool:
        return self.shard.has_result(
            model=self.name,
            method="none",
            dtype_label=DTYPES[self.grid.eval.dtype][0],
            calib_set=None,
            eval_set=eval_set,
            seq_len=self.grid.eval.seq_len,
        )

    def windows(self, purpose: str, name: str) -> torch.Tensor:
        """Token windows (:mod:`qbayes.collect.protocol`): ``eval``, ``selfcheck`` and
        ``landscape`` from a text's evaluation part, ``calib`` and ``outliers`` from its
        calibration part."""
        key = (purpose, name)
        if key not in self._windows:
            g, f = self.grid, self.grid.features
            eval_count = g.eval.tokens // g.eval.seq_len if g.eval.tokens else None
            check_tokens = min(g.self_check.tokens, g.eval.tokens or g.self_check.tokens)
            part, seq_len, count = {
                "eval": ("eval", g.eval.seq_len, eval_count),
                "selfcheck": ("eval", g.eval.seq_len, check_tokens // g.eval.seq_len),
                "calib": ("calib", g.calibration.seq_len, g.calibration.samples),
                "outliers": ("calib", g.calibration.seq_len, f.outlier_tokens // g.calibration.seq_len),
                "landscape": ("eval", f.seq_len, f.tokens // f.seq_len),
            }[purpose]
            self._windows[key] = protocol.windows(
                self.loaded.tokenizer, name, part, seq_len=seq_len, count=count, seed=self.opts.seed, files=g.text_files
            )
        return self._windows[key]

    def text_note(self, eval_set: str, res: EvalResult) -> str:
        """Where an evaluation text came from and how much of it was scored."""
        if protocol.is_builtin(eval_set):
            origin = "built-in text"
        else:
            origin = protocol.text_file(eval_set, "eval", self.grid.text_files).origin
        return f"eval {eval_set}: {origin}, {res.windows} windows of {res.seq_len} tokens"

    def decode_speed(self, model: torch.nn.Module) -> float:
        prompt = self.windows("eval", self.grid.eval.sets[0])[0, : self.grid.efficiency.prompt_tokens].tolist()
        return decode_tokens_per_s(model, prompt, self.grid.efficiency.decode_tokens)

    def quant_bytes(self, q: Quantized) -> int:
        layers = self.loaded.layers()
        float_layer_bytes = sum(layer.module.weight.numel() * layer.module.weight.element_size() for layer in layers)
        return int(self.base_bytes - float_layer_bytes + math.ceil(q.quant_bits / 8))

    def eval_bits(self) -> int:
        return DTYPES[self.grid.eval.dtype][1]

    def note(self, cfg: Config, q: Quantized, t_quant: float) -> str:
        parts = [cfg.method.description, f"quantize {t_quant:.1f} s"]
        check = self._self_check_notes.get(cfg.method.name)
        if check:
            parts.append(check)
        return "; ".join(parts + q.notes)

    def result_row(
        self,
        res: EvalResult,
        eval_set: str,
        *,
        method,
        w_kind,
        w_bits,
        group_size,
        w_bits_eff,
        w_sym,
        dtype_label,
        calib,
        sqnr,
        weight_bytes,
        decode,
        note,
        wall_s,
    ) -> dict:
        return {
            "model": self.name,
            "method": method,
            "w_kind": w_kind,
            "w_bits": float(w_bits),
            "group_size": group_size,
            "w_bits_eff": w_bits_eff,
            "w_sym": w_sym,
            "dtype_label": dtype_label,
            "act_bits": float(self.eval_bits()),
            "calib_set": calib,
            "eval_set": eval_set,
            "seq_len": res.seq_len,
            "eval_tokens": res.eval_tokens,
            "eval_windows": res.windows,
            "ppl": res.ppl,
            "nll": res.nll,
            "nll_se": res.nll_se,
            "sqnr_db": sqnr,
            "weight_bytes": weight_bytes,
            "decode_tok_s": decode,
            "kld_mean": res.kl.mean if res.kl else None,
            "kld_se": res.kl.se if res.kl else None,
            "kld_p99": res.kl.p99 if res.kl else None,
            "top1_agree": res.kl.top1_agree if res.kl else None,
            "note": note,
            **self.prov.columns(wall_s),
        }


class ModelNotLoaded(QBayesError):
    """The run's model could not be loaded (recorded in the failures table)."""


class SkipConfig(Exception):
    """A configuration that cannot run; recorded as a failure with its stage and type."""

    def __init__(self, message: str, *, stage: str, error_type: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.error_type = error_type or "Skipped"


def _device(name: str) -> torch.device:
    if name not in ("cpu", "cuda"):
        raise QBayesError(f"unknown device '{name}': use cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise QBayesError(
            "--device cuda: no CUDA device is available (torch "
            f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} CUDA)"
        )
    return torch.device(name)


def _short(exc: BaseException, limit: int = 600) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""Memory discipline of a collection run, on CPU with the toy models:

* each configuration's quantized copy (llm-compressor's included) is freed when its step
  ends, proved with weak references, so only the base model stays alive;
* running out of memory while loading a model writes a failure row and exits 1 (the
  next model still runs); a Ray task returns it as its error, so it is not retried;
* running out of memory in a method's self-check fails that configuration, not the method;
* evaluation keeps no KV cache;
* the landscape features of a bfloat16 model are float32 measurements, and leave its
  weights exactly as they were;
* the memory plan refuses a float32 7B run on one 80 GiB device with the figures and
  the fix, accepts the bfloat16 gpu grid, and spreads a 70B model over several devices;
* a preflight for a Ray driver without a GPU does not refuse ``--device cuda`` or a
  CUDA-only method's package, which are checked where the work runs.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import polars as pl  # noqa: E402

from qbayes.collect import protocol  # noqa: E402
from qbayes.collect.evaluate import evaluate  # noqa: E402
from qbayes.collect.executors.base import CollectRequest  # noqa: E402
from qbayes.collect.executors.tasks import TaskSpec  # noqa: E402
from qbayes.collect.executors.worker import run_task  # noqa: E402
from qbayes.collect.grid import load_grid  # noqa: E402
from qbayes.collect.landscape import landscape  # noqa: E402
from qbayes.collect.manifest import ModelEntry  # noqa: E402
from qbayes.collect.memory import GIB, plan  # noqa: E402
from qbayes.collect.methods.base import Method  # noqa: E402
from qbayes.collect.methods.rtn_method import RTN  # noqa: E402
from qbayes.collect.modelio import LoadedModel, load_model, skeleton  # noqa: E402
from qbayes.collect.plan import CollectOptions  # noqa: E402
from qbayes.collect.preflight import PreflightError, preflight  # noqa: E402
from qbayes.collect.runner import Collector  # noqa: E402
from qbayes.db import store  # noqa: E402

from collect_support import ROOT, registered, write_grid  # noqa: E402

SIX = """
[methods.rtn]
formats = ["int4-g32", "int8", "int2-g32"]
[methods.quanto]
formats = ["int8"]
[methods.gptq]
formats = ["int4-g32"]
[methods.awq]
formats = ["int4-g32-asym"]
"""


def test_every_configuration_frees_its_quantized_copy(toy_models, tmp_path, monkeypatch):
    copies: list[weakref.ref] = []
    real_copy = LoadedModel.fresh_copy

    def tracked_copy(self):
        model = real_copy(self)
        copies.append(weakref.ref(model))
        return model

    alive_after: dict[str, int] = {}
    real_execute = Collector.execute

    def execute(self, step):
        real_execute(self, step)
        alive_after[step.label] = sum(ref() is not None for ref in copies)

    monkeypatch.setattr(LoadedModel, "fresh_copy", tracked_copy)
    monkeypatch.setattr(Collector, "execute", execute)
    grid = load_grid(write_grid(tmp_path / "g.toml", methods=SIX))
    opts = CollectOptions(toy_models["llama"], "toy", grid, tmp_path / "shard", progress=False)
    summary = Collector(opts).run()
    assert not summary.failed, summary.failed
    configs = [label for label in alive_after if label.split("/")[0] in ("rtn", "quanto", "gptq", "awq")]
    assert len(configs) == 6
    assert len(copies) == 6 + 4  # one copy per configuration and one per method's self-check
    assert alive_after == dict.fromkeys(alive_after, 0)


class OomOnce(Method):
    """Round-to-nearest whose first run (its self-check) runs out of memory."""

    name = "oomonce"
    label = "RTN"
    label_suffix = "@oomonce"
    self_check_format = RTN.self_check_format

    def __init__(self):
        self.calls = 0

    def quantize(self, job):
        self.calls += 1
        if self.calls == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return RTN().quantize(job)


def test_out_of_memory_in_a_self_check_fails_one_configuration_not_the_method(toy_models, tmp_path):
    grid = load_grid(write_grid(tmp_path / "g.toml", methods='[methods.oomonce]\nformats = ["int8", "int4-g32"]\n'))
    opts = CollectOptions(toy_models["llama"], "toy", grid, tmp_path / "shard", progress=False)
    with registered(OomOnce()):
        summary = Collector(opts).run()
    db = store.load(tmp_path / "shard")
    assert db.failures.select("config", "error_type").rows() == [("oomonce/int8/-", "OutOfMemory")]
    assert db.results.filter(pl.col("method") == "RTN")["dtype_label"].to_list() == ["int4-g32@oomonce"]
    assert len(summary.failed) == 1


def _oom_for(monkeypatch, path: Path):
    """Loading the model at ``path`` runs out of memory (as a GPU too small would)."""
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained

    def from_pretrained(p, *args, **kwargs):
        if Path(p).resolve() == Path(path).resolve():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 25.00 GiB")
        return real(p, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)


def test_out_of_memory_at_load_writes_a_failure_row_and_exits_1(cli, toy_models, tmp_path, monkeypatch):
    grid = write_grid(tmp_path / "g.toml", methods='[methods.rtn]\nformats = ["int8"]\n')
    llama, opt = toy_models["llama"], toy_models["opt"]
    _oom_for(monkeypatch, llama)
    out = tmp_path / "shard"
    r = cli(
        "collect", "--model", llama, "--model", opt, "--family", "toy", "--grid", grid, "--out", out, "--no-progress"
    )
    assert r.code == 1, r.err
    db = store.load(out)
    fail = db.failures.row(0, named=True)
    assert (fail["model"], fail["config"], fail["stage"], fail["error_type"]) == (
        "toy-llama",
        "model",
        "load",
        "OutOfMemory",
    )
    assert "out of memory" in fail["message"] and "bfloat16" in fail["message"]
    assert set(db.results["model"]) == {"toy-opt"}  # the next model still ran
    assert "toy-llama: not loaded" in r.out


def test_a_ray_task_returns_a_load_out_of_memory_instead_of_raising(toy_models, tmp_path, monkeypatch):
    """A task that raises is retried by Ray; one that returns its error is not."""
    _oom_for(monkeypatch, toy_models["llama"])
    grid = load_grid(write_grid(tmp_path / "g.toml", methods='[methods.rtn]\nformats = ["int8"]\n'))
    task = TaskSpec("toy/baseline", "baseline", ModelEntry(toy_models["llama"], "toy", "toy"), grid, tmp_path / "task")
    result = run_task(task)
    assert result.error is not None and "out of memory" in result.error
    assert result.db.failures.row(0, named=True)["error_type"] == "OutOfMemory"


def test_evaluation_keeps_no_kv_cache(toy_models):
    loaded = load_model(toy_models["llama"])
    seen = []
    loaded.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("use_cache")), with_kwargs=True
    )
    windows = protocol.windows(loaded.tokenizer, "shakespeare", "eval", seq_len=64, count=4, seed=0, files=())
    evaluate(loaded.model, windows, 2, reference=loaded.model)
    assert seen and set(seen) == {False}


def test_landscape_of_a_bfloat16_model_is_measured_in_float32(toy_models):
    """At a radius of 1e-3 a bfloat16 perturbation would leave most weights unchanged;
    raised to float32, the bfloat16 model's loss rise matches the float32 model's (their
    weights differ by bfloat16 rounding only), and its weights come back bit for bit."""
    settings = dict(hutchinson_samples=2, power_iters=3, radii=(1e-3,), radial_directions=2, seed=0)
    rises, traces = {}, {}
    for dtype in ("float32", "bfloat16"):
        loaded = load_model(toy_models["llama"], dtype=dtype)
        windows = protocol.windows(loaded.tokenizer, "shakespeare", "eval", seq_len=64, count=2, seed=0, files=())
        before = [layer.module.weight.detach().clone() for layer in loaded.layers()]
        res = landscape(loaded.model, loaded.layers(), windows, **settings)
        rises[dtype], traces[dtype] = res.radial[1e-3].value, res.trace.value
        after = [layer.module.weight for layer in loaded.layers()]
        assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(after, before, strict=True))
    assert rises["float32"] > 0
    assert rises["bfloat16"] == pytest.approx(rises["float32"], rel=0.1)
    assert traces["bfloat16"] == pytest.approx(traces["float32"], rel=0.1)


LLAMA_7B = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}
LLAMA_70B = {
    **LLAMA_7B,
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
}


def _config_only(path: Path, config: dict) -> Path:
    """A model directory with a config and an (empty) weights file: enough for a skeleton."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_memory_plan_refuses_float32_7b_on_80_gib_and_accepts_the_gpu_grid(tmp_path):
    bones = skeleton(_config_only(tmp_path / "llama7b", LLAMA_7B))
    default = load_grid(ROOT / "collectors" / "default.toml")
    gpu = load_grid(ROOT / "collectors" / "gpu.toml")
    fp32 = plan(bones, default, [m.name for m in default.methods])
    assert fp32.weights == pytest.approx(6.74e9 * 4, rel=0.01)
    problem = fp32.problem(80 * GIB)
    assert problem is not None and "GiB" in problem and "bfloat16" in problem
    bf16 = plan(bones, gpu, [m.name for m in gpu.methods])
    assert bf16.weights == pytest.approx(6.74e9 * 2, rel=0.01)
    assert bf16.problem(80 * GIB) is None, bf16.largest.describe()
    big = plan(skeleton(_config_only(tmp_path / "llama70b", LLAMA_70B)), gpu, [m.name for m in gpu.methods])
    assert big.problem(80 * GIB) is not None
    assert big.problem(80 * GIB, devices=8) is None


def test_preflight_of_a_ray_driver_without_gpu_leaves_cuda_checks_to_the_workers(toy_models, tmp_path):
    grid = load_grid(
        write_grid(
            tmp_path / "g.toml",
            methods='[methods.rtn]\nformats = ["int8"]\n[methods.autoawq]\nformats = ["int4-g32-asym"]\n',
        )
    )
    request = CollectRequest((ModelEntry(toy_models["llama"], "toy", "toy"),), grid, tmp_path / "out", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(PreflightError, match="no CUDA device"):
            preflight(request)
    checked = preflight(request, remote=True)
    assert checked.device == "cuda"
    assert not (tmp_path / "out").exists()


def test_gpu_grid_is_bfloat16():
    grid = load_grid(ROOT / "collectors" / "gpu.toml")
    assert grid.eval.dtype == "bfloat16"
    assert {m.name for m in grid.methods} >= {"rtn", "gptq", "awq"}

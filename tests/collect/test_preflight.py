"""Fail fast, fail loud: the preflight refuses a run that cannot work before any model is
loaded (exit 2, the missing piece named, nothing written); a run in which a configuration
failed exits 1 after saving the rest."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("datasets")

import polars as pl  # noqa: E402

from qbayes.collect import protocol, texts  # noqa: E402
from qbayes.collect.methods.base import Method, Requirement  # noqa: E402
from qbayes.collect.modelio import TOKENIZER_FILES  # noqa: E402
from qbayes.db import store  # noqa: E402

from collect_support import registered, wikitext_rows, write_grid, write_parquet  # noqa: E402

RTN_ONLY = """
[methods.rtn]
formats = ["int4-g32"]
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An untrained toy model: the preflight never runs it."""
    from qbayes.collect.toymodels import ToySpec, make_toy

    path = tmp_path_factory.mktemp("untrained") / "toy"
    make_toy(path, ToySpec("llama"), steps=0, train_chars=100_000)
    return path


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """More untrained toys, by name: a GPT-2 (Conv1D projections) and a wider Llama whose
    layer widths (128, 512) groups of 128 divide."""
    from qbayes.collect.toymodels import ToySpec, make_toy

    root = tmp_path_factory.mktemp("untrained-more")
    specs = {"gpt2": ToySpec("gpt2"), "wide": ToySpec("llama", hidden=128, intermediate=512)}
    for name, spec in specs.items():
        make_toy(root / name, spec, steps=0, train_chars=100_000)
    return {name: root / name for name in specs}


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    protocol.load_rows.cache_clear()


@pytest.fixture
def wiki(tmp_path):
    return write_parquet(tmp_path / "wiki.test.parquet", "text", wikitext_rows(texts.load_text("bible", "eval")[:8000]))


def refused(r, out, *messages):
    assert r.code == 2, (r.code, r.err)
    assert "nothing was loaded or written" in r.err
    for m in messages:
        assert m in r.err, r.err
    assert not out.exists()


def test_unknown_sets_get_suggestions(cli, model, tmp_path, wiki):
    out = tmp_path / "out"
    args = ("collect", "--model", model, "--family", "toy", "--grid", "tiny", "--out", out)
    r = cli(*args, "--eval-text", f"wikitxt2={wiki}")
    assert r.code == 2 and "unknown set 'wikitxt2' (did you mean 'wikitext2'?)" in r.err and not out.exists()
    r = cli(*args, "--eval", "wikitext3")
    assert r.code == 2 and "unknown evaluation set 'wikitext3' (did you mean 'wikitext2'?)" in r.err
    r = cli(*args, "--eval-text", f"bible={wiki}")
    assert (
        r.code == 2 and "'bible' is a built-in evaluation text; a file can give the text of c4, ptb, wikitext2" in r.err
    )
    r = cli(*args, "--eval-text", "wikitext2")
    assert r.code == 2 and "expected NAME=PATH" in r.err
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("test.parquet", b"", "the file is empty"),
        ("wiki.test.raw", b"\n\n  \n", "holds no text"),
        ("test.parquet", b"PAR1 garbage", "cannot be read as a parquet dataset"),
    ],
)
def test_empty_or_unreadable_text_file(cli, model, tmp_path, name, content, message):
    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "out"
    r = cli(
        "collect",
        "--model",
        model,
        "--family",
        "toy",
        "--grid",
        "tiny",
        "--out",
        out,
        "--eval-text",
        f"wikitext2={bad}",
    )
    refused(r, out, "evaluation text 'wikitext2'", str(bad), message)


def test_missing_file_and_hub_text_say_how_to_get_them(cli, model, tmp_path):
    out = tmp_path / "out"
    r = cli(
        "collect",
        "--model",
        model,
        "--family",
        "toy",
        "--grid",
        "tiny",
        "--out",
        out,
        "--eval-text",
        f"c4={tmp_path / 'nowhere.json.gz'}",
        "--eval",
        "wikitext2",
        "--calib",
        "c4",
    )
    refused(
        r,
        out,
        f"evaluation text 'c4': {tmp_path / 'nowhere.json.gz'}: no such file or directory",
        "evaluation text 'wikitext2': hf://datasets/Salesforce/wikitext/wikitext-2-raw-v1/test-00000-of-00001."
        "parquet is not in the local Hugging Face cache; fetch it with --download, or give a local copy with "
        "--eval-text wikitext2=PATH (the test split",
        "calibration text 'c4': hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz is not in the "
        "local Hugging Face cache",
    )


def test_seq_len_longer_than_the_context(cli, model, tmp_path):
    out = tmp_path / "out"
    r = cli("collect", "--model", model, "--family", "toy", "--grid", "tiny", "--out", out, "--seq-len", "1024")
    refused(
        r,
        out,
        f"model {model}: eval.seq_len 1024 is longer than its context of 512 tokens "
        "(config.json max_position_embeddings): use --seq-len 512",
        "calibration.seq_len 1024 is longer",
    )


def test_calibration_that_overlaps_the_evaluation_text(cli, model, tmp_path, wiki):
    out = tmp_path / "out"
    grid = write_grid(
        tmp_path / "g.toml",
        eval_sets=("shakespeare",),
        methods="""
[methods.gptq]
formats = ["int4-g32"]
""",
    )
    r = cli(
        "collect",
        "--model",
        model,
        "--family",
        "toy",
        "--grid",
        grid,
        "--out",
        out,
        "--eval-text",
        f"wikitext2={wiki}",
        "--calib-text",
        f"wikitext2={wiki}",
    )
    refused(
        r,
        out,
        "calibration text 'wikitext2': shares",
        "passage(s) with evaluation text 'wikitext2'",
        "calibrating on evaluation text is refused",
    )
    # the built-in Bible's evaluation part, given as a calibration file, overlaps it too
    r = cli(
        "collect",
        "--model",
        model,
        "--family",
        "toy",
        "--grid",
        grid,
        "--out",
        out,
        "--eval",
        "bible",
        "--calib-text",
        f"pile={wiki}",
    )
    refused(r, out, "calibration text 'pile': shares", "evaluation text 'bible'")


def test_model_directory_without_a_tokenizer(cli, model, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(
        model, bare, ignore=shutil.ignore_patterns(*TOKENIZER_FILES, "tokenizer_config.json", "special_tokens_map.json")
    )
    out = tmp_path / "out"
    r = cli("collect", "--model", bare, "--family", "toy", "--grid", "tiny", "--out", out)
    refused(r, out, f"model {bare}: has no tokenizer (none of tokenizer.json", "tokenizer.save_pretrained(DIR)")


class NeedsPackage(Method):
    name = "needspkg"
    label = "RTN"
    label_suffix = "@needspkg"
    description = "test method whose package is not installed"
    requires = (Requirement("qbayes_no_such_package", "pip install qbayes-no-such-package"),)


def test_methods_devices_formats_and_packages(cli, model, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        methods="""
[methods.rtn]
formats = ["int4-g32", "int9"]
[methods.quanto]
formats = ["int3-g32"]
[methods.autoawq]
formats = ["int4-g128-asym"]
[methods.needspkg]
formats = ["int4"]
""",
    )
    out = tmp_path / "out"
    with registered(NeedsPackage()):
        r = cli("collect", "--model", model, "--family", "toy", "--grid", grid, "--out", out)
    refused(
        r,
        out,
        "method 'rtn', format 'int9'",
        "out of range 2..8",
        "method 'quanto', format 'int3-g32': quanto cannot do int3-g32",
        "method 'autoawq': runs on cuda only, this run is on cpu",
        "method 'needspkg': method 'needspkg' is unavailable: install it with: pip install qbayes-no-such-package",
    )


def test_methods_that_cannot_take_the_models_layers(cli, model, untrained, tmp_path):
    """Checked on the model's skeleton (config.json on the meta device), not its weights."""
    grid = write_grid(
        tmp_path / "g.toml",
        methods="""
[methods.rtn]
formats = ["int4-g128"]
[methods.quanto]
formats = ["int8"]
[methods.gptq]
formats = ["int4-g128", "int4-g32"]
""",
    )
    out = tmp_path / "out"
    r = cli("collect", "--model", model, "--model", untrained["gpt2"], "--family", "toy", "--grid", grid, "--out", out)
    refused(
        r,
        out,
        f"model {model}, method 'gptq', format 'int4-g128': group size 128 does not divide the input "
        "width of 12 layer(s): model.layers.0.self_attn.q_proj (64 inputs)",
        f"model {untrained['gpt2']}, method 'quanto': quanto quantizes torch.nn.Linear layers only; this gpt2 "
        "model's projections are Conv1D layers",
        f"model {untrained['gpt2']}, method 'gptq': llm-compressor quantizes torch.nn.Linear layers only",
    )
    assert "'rtn'" not in r.err and "int4-g32" not in r.err  # RTN pads groups; g32 divides every width


class AlwaysFails(Method):
    name = "alwaysfails"
    label = "RTN"
    label_suffix = "@fails"
    description = "test method that raises"

    def quantize(self, job):
        raise RuntimeError("backend exploded")


def test_a_run_whose_configurations_all_fail_exits_1(cli, model, tmp_path):
    grid = write_grid(
        tmp_path / "g.toml",
        methods="""
[methods.alwaysfails]
formats = ["int4", "int8"]
""",
    )
    out = tmp_path / "out"
    with registered(AlwaysFails()):
        r = cli("collect", "--model", model, "--family", "toy", "--grid", grid, "--out", out, "--no-progress")
    assert r.code == 1, r.err
    assert "failed: alwaysfails/int4/- [quantize] RuntimeError: backend exploded" in r.out
    assert "2 configuration(s) failed" in r.err
    db = store.load(out)  # what ran is saved: the baseline
    assert set(db.results["method"]) == {"none"} and db.failures.filter(pl.col("stage") == "quantize").height == 2


def test_the_default_grid_needs_only_what_the_collect_extra_installs(untrained, tmp_path):
    """No optional package, no download, no file: what `pip install '.[collect]'` gives
    (the full run on a trained model is in the report of issue 23; it takes minutes)."""
    from qbayes.cli.collect import resolve_grid
    from qbayes.collect.executors.base import CollectRequest
    from qbayes.collect.grid import load_grid
    from qbayes.collect.manifest import ModelEntry
    from qbayes.collect.preflight import preflight, used_texts

    grid = load_grid(resolve_grid("default"))
    request = CollectRequest(models=(ModelEntry.make(untrained["wide"], "toy"),), grid=grid, out=tmp_path / "out")
    checked = preflight(request)
    assert checked.grid.text_files == ()  # every text is built in
    assert {n for _, n in used_texts(grid)} == {"shakespeare", "bible", "pystdlib", "noise"}
    assert not (tmp_path / "out").exists()

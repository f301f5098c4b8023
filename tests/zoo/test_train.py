"""`qbayes zoo train`: recipe checks, deterministic training, checkpoints with training
cards, resume, and the collector reading the card (training tokens in the models table)."""

from __future__ import annotations

import csv
import json

import pytest

from qbayes.errors import QBayesError
from qbayes.zoo.recipe import load_recipe

RECIPE = """
seed = 7
archs = ["llama", "opt"]
[corpus]
vocab = 384
[training]
seq_len = 32
batch_size = 4
warmup_steps = 3
budgets_m = [0.001, 0.004]
[[sizes]]
name = "xs"
hidden = 32
layers = 1
heads = 2
intermediate = 64
"""


def write(tmp_path, text, name="zoo.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            "seed = 1\narchs = ['lama']\n[[sizes]]\nname='a'\nhidden=8\nlayers=1\nheads=2\nintermediate=8\n",
            "did you mean 'llama'",
        ),
        (
            "seed = 1\n[training]\nbudget_m = [1.0]\n"
            "[[sizes]]\nname='a'\nhidden=8\nlayers=1\nheads=2\nintermediate=8\n",
            "unknown key 'budget_m'",
        ),
        (
            (
                "seed = 1\n[training]\nbudgets_m = [2.0, 1.0]\n[[sizes]]\nname='a'\nhidden=8\nlayers=1\nheads=2\n"
                "intermediate=8\n"
            ),
            "strictly increasing",
        ),
        ("seed = 1\n[[sizes]]\nname='a'\nhidden=10\nlayers=1\nheads=4\nintermediate=8\n", "divisible by heads"),
        ("seed = 1\n", "at least one [[sizes]]"),
        ("seed = 1\n[[sizes]]\nname='a'\nhidden='8'\nlayers=1\nheads=2\nintermediate=8\n", "expected int"),
    ],
)
def test_recipe_errors_name_the_problem(tmp_path, bad, message):
    with pytest.raises(QBayesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(write(tmp_path, bad))


def test_missing_or_malformed_recipe_is_refused_and_nothing_is_written(tmp_path, cli):
    with pytest.raises(QBayesError, match="no such zoo recipe"):
        load_recipe(tmp_path / "absent.toml")
    bad = write(tmp_path, "seed = 1\n[[sizes]\nname = 'a'\n")
    with pytest.raises(QBayesError, match="not valid TOML"):
        load_recipe(bad)
    pytest.importorskip("torch")
    out = tmp_path / "zoo-out"
    res = cli("zoo", "train", "--grid", str(bad), "--out", str(out), "--no-progress")
    assert res.code != 0 and "not valid TOML" in res.err + res.out
    assert not out.exists()


def test_shipped_recipe_spans_two_orders_of_magnitude_of_d_over_n():
    from helpers import ROOT

    recipe = load_recipe(ROOT / "collectors" / "zoo.toml")
    assert set(recipe.archs) >= {"llama", "gpt2", "opt"} and len(recipe.sizes) >= 4
    assert len(recipe.training.budgets_m) >= 4

    # non-embedding parameters of the smallest and largest Llama size (attention + gated MLP)
    def non_embed(s):
        return s.layers * (4 * s.hidden**2 + 3 * s.hidden * s.intermediate)

    lo = recipe.training.budgets_m[0] * 1e6 / max(non_embed(s) for s in recipe.sizes)
    hi = recipe.training.budgets_m[-1] * 1e6 / min(non_embed(s) for s in recipe.sizes)
    assert hi / lo >= 100


def _manifest(path):
    with open(path / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_is_deterministic_resumable_and_recorded(tmp_path, cli):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    recipe = write(tmp_path, RECIPE)
    a, b = tmp_path / "a", tmp_path / "b"
    res = cli("zoo", "train", "--grid", str(recipe), "--out", str(a), "--jobs", "2", "--no-progress")
    assert res.code == 0, res.out + res.err
    assert "2 run(s) trained, 0 already done, 0 failed" in res.out + res.err
    res = cli("zoo", "train", "--grid", str(recipe), "--out", str(b), "--only", "opt-xs,llama-xs", "--no-progress")
    assert res.code == 0, res.out + res.err
    rows_a, rows_b = _manifest(a), _manifest(b)
    assert len(rows_a) == 4  # 2 runs x 2 budgets
    assert [r["content_sha256"] for r in rows_a] == [r["content_sha256"] for r in rows_b]
    assert len({r["content_sha256"] for r in rows_a}) == 4
    for row in rows_a:
        card = json.loads((a / row["path"] / "qbayes_train.json").read_text())
        steps = round(card["budget_m"] * 1e6 / (32 * 4))
        assert card["train_tokens"] == steps * 32 * 4 == int(row["train_tokens"])
        assert card["family"] == row["family"] == f"zoo-{card['arch']}"
        assert (a / row["path"] / "tokenizer.json").is_file()
    by_run = {}
    for row in rows_a:
        by_run.setdefault(row["arch"], []).append(float(row["train_loss"]))
    for losses in by_run.values():  # more tokens, lower training loss
        assert losses[-1] < losses[0]
    # rerun: nothing to train, same manifest
    res = cli("zoo", "train", "--grid", str(recipe), "--out", str(a), "--no-progress")
    assert "0 run(s) trained, 2 already done" in res.out + res.err
    assert _manifest(a) == rows_a
    # the collector records the card's training tokens
    ckpt = a / rows_a[0]["path"]
    grid = write(
        tmp_path,
        "[eval]\nsets=['shakespeare']\ntokens=256\nseq_len=32\n[calibration]\nsets=['shakespeare']\n"
        "samples=2\nseq_len=32\n[self_check]\ntokens=128\n[efficiency]\ndecode_tokens=0\n"
        "[features]\nlandscape=false\noutliers=false\nper_layer_sqnr=false\n"
        "[methods.rtn]\nformats=['int8']\n",
        "grid.toml",
    )
    res = cli(
        "collect",
        "--model",
        str(ckpt),
        "--family",
        rows_a[0]["family"],
        "--name",
        rows_a[0]["name"],
        "--grid",
        str(grid),
        "--out",
        str(tmp_path / "shard"),
        "--no-progress",
    )
    assert res.code == 0, res.out + res.err
    from qbayes.db.store import load

    models = load(tmp_path / "shard").models
    assert models["train_tokens_b"].to_list() == [int(rows_a[0]["train_tokens"]) / 1e9]
    assert "qbayes zoo" in models["reference"][0]


def test_unknown_run_is_refused_with_a_suggestion(tmp_path, cli):
    pytest.importorskip("torch")
    res = cli("zoo", "train", "--grid", str(write(tmp_path, RECIPE)), "--out", str(tmp_path / "o"), "--only", "lama-xs")
    assert res.code != 0
    assert "llama-xs" in res.out + res.err

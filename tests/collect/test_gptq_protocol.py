"""The published protocol on a trained toy model: WikiText-2 rows from a file in the hub's
own format, perplexity checked against an independent computation, KL divergence from the
unquantized model, and the rows joining the published ones in the training table."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

import polars as pl  # noqa: E402

from qbayes.collect import texts  # noqa: E402
from qbayes.collect.methods.base import Method, Quantized  # noqa: E402
from qbayes.collect.sqnr import SqnrAccumulator  # noqa: E402
from qbayes.db import store  # noqa: E402

from collect_support import registered, wikitext_rows, write_grid, write_parquet  # noqa: E402

SEQ_LEN = 128
FORMATS = ["int2-g32", "int4-g32", "int8"]


class Identity(Method):
    """Quantizes nothing: the quantized model is a copy of the unquantized one."""

    name = "identity"
    label = "RTN"
    label_suffix = "@identity"
    description = "test method that leaves every weight as it is"

    def quantize(self, job):
        model = job.loaded.fresh_copy()
        sqnr, n = SqnrAccumulator(), 0
        for layer in job.loaded.layers(model):
            sqnr.add(layer.name, layer.weight(), layer.weight())
            n += layer.weight().numel()
        return Quantized(model, None, 32 * n, n, sqnr)


@pytest.fixture(scope="module")
def wikitext_fixture(tmp_path_factory):
    """A WikiText-2-style test split (parquet, column "text") made of the built-in Bible's
    evaluation part, about 100 windows of 128 tokens for the toy tokenizer."""
    rows = wikitext_rows(texts.load_text("bible", "eval")[:45_000])
    return write_parquet(tmp_path_factory.mktemp("wikitext") / "test-00000-of-00001.parquet", "text", rows), rows


@pytest.fixture(scope="module")
def run(toy_models, wikitext_fixture, tmp_path_factory):
    from qbayes.cli import main

    root = tmp_path_factory.mktemp("protocol")
    grid = write_grid(
        root / "g.toml",
        eval_sets=("wikitext2",),
        methods=f"""
[methods.rtn]
formats = {FORMATS!r}
[methods.identity]
formats = ["int8"]
""".replace("'", '"'),
    )
    # every window of the text (the protocol's own count)
    grid.write_text(grid.read_text().replace("tokens = 1024\nseq_len = 128\n", "tokens = 0\nseq_len = 128\n", 1))
    out = root / "shard"
    code = 0
    with registered(Identity()):
        try:
            main(
                [
                    "collect",
                    "--model",
                    str(toy_models["llama"]),
                    "--family",
                    "toy",
                    "--grid",
                    str(grid),
                    "--out",
                    str(out),
                    "--no-progress",
                    "--eval-text",
                    f"wikitext2={wikitext_fixture[0]}",
                ]
            )
        except SystemExit as exc:
            code = exc.code
    assert code == 0
    return store.load(out)


def _row(db, method, label, eval_set="wikitext2"):
    r = db.results.filter(
        (pl.col("method") == method) & (pl.col("dtype_label") == label) & (pl.col("eval_set") == eval_set)
    )
    assert r.height == 1
    return r.row(0, named=True)


def test_perplexity_equals_an_independent_computation(run, toy_models, wikitext_fixture):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = toy_models["llama"]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok("\n\n".join(wikitext_fixture[1]), return_tensors="pt").input_ids[0]
    n = ids.numel() // SEQ_LEN
    with torch.no_grad():
        losses = [
            model(
                input_ids=ids[i * SEQ_LEN : (i + 1) * SEQ_LEN][None], labels=ids[i * SEQ_LEN : (i + 1) * SEQ_LEN][None]
            ).loss.item()
            for i in range(n)
        ]
    expected = math.exp(sum(losses) / n)
    base = _row(run, "none", "fp32")
    assert 50 < n < 200 and base["eval_windows"] == n and base["seq_len"] == SEQ_LEN
    assert base["eval_tokens"] == n * (SEQ_LEN - 1)
    assert base["ppl"] == pytest.approx(expected, rel=1e-5)
    assert base["kld_mean"] is None and base["top1_agree"] is None  # the reference itself
    assert "wikitext2: local file" in base["note"] and f"{n} windows of {SEQ_LEN} tokens" in base["note"]


def test_kl_divergence_is_zero_for_identity_and_grows_as_bits_fall(run):
    ident = _row(run, "RTN", "int8@identity")
    assert ident["kld_mean"] == pytest.approx(0.0, abs=1e-9) and ident["kld_p99"] == pytest.approx(0.0, abs=1e-9)
    assert ident["top1_agree"] == 1.0
    assert ident["nll"] == pytest.approx(_row(run, "none", "fp32")["nll"], abs=1e-9)
    kl = {f: _row(run, "RTN", f) for f in FORMATS}
    for r in kl.values():
        assert r["kld_mean"] >= 0 and r["kld_se"] >= 0 and r["kld_p99"] >= 0 and 0 <= r["top1_agree"] <= 1
    assert kl["int8"]["kld_mean"] < kl["int4-g32"]["kld_mean"] < kl["int2-g32"]["kld_mean"]
    assert kl["int8"]["top1_agree"] > kl["int2-g32"]["top1_agree"]
    # at 2 bits the per-token spread is measured: a standard error well below the mean
    assert 0 < kl["int2-g32"]["kld_se"] < kl["int2-g32"]["kld_mean"] / 5
    # KL is on the scale of ln(ppl_q / ppl_base): at 2 bits both are well away from 0
    assert kl["int2-g32"]["nll"] - _row(run, "none", "fp32")["nll"] > 0.02


def test_collected_rows_join_the_published_eval_set_levels(run, tmp_path):
    from qbayes.db.merge import merge
    from qbayes.model.table import training_table

    from helpers import SHIPPED_DB

    merged, _ = merge([store.load(SHIPPED_DB), run])
    table = training_table(merged, rows="all")
    wiki = table.filter(pl.col("eval_set") == "wikitext2")
    assert set(wiki["source"]) >= {"qbayes-collect"} and wiki["source"].n_unique() > 1
    collected = wiki.filter(pl.col("source") == "qbayes-collect")
    assert collected.height == len(FORMATS) + 1 and (collected["fp16_ppl"] > 1).all()

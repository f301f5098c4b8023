"""The database: shipped data, schema checks, atomic writes, merging, and bad input."""

from __future__ import annotations

import math

import polars as pl
import pytest

from qbayes.db import store
from qbayes.db.database import Database
from qbayes.db.merge import MergeConflict, merge
from qbayes.db.published import import_published
from qbayes.db.published_accuracy import with_accuracy
from qbayes.db.schema import META_TABLE_KEY, META_VERSION_KEY, SCHEMA_VERSION, TABLES

from helpers import ROOT, SHIPPED_DB, tree_digest

PTQ = ROOT / "data" / "published" / "published_ptq.csv"
META = ROOT / "data" / "published" / "model_meta.csv"
RELEASED = ROOT / "data" / "published" / "release_dates.csv"


# --- the shipped data -------------------------------------------------------------

PUBLISHED_FAMILIES = {"OPT", "BLOOM", "LLaMA-1", "Llama-2", "Falcon", "Mistral", "Mixtral", "Qwen3", "Phi", "Qwen2"}
ACCURACY_CSV = ROOT / "data" / "published" / "published_accuracy.csv"


def _published(db: Database) -> Database:
    """The published part of the shipped database (the zoo's collected rows set aside)."""
    key = ["model", "eval_set", "source", "source_table", "method", "dtype_label", "calib_set"]
    return Database(
        models=db.models.filter(pl.col("family").is_in(list(PUBLISHED_FAMILIES))).sort("model"),
        results=db.results.filter(pl.col("source_kind") != "collector").sort(key, nulls_last=True),
        accuracy=db.accuracy.filter(pl.col("source_kind") != "collector").sort(
            ["model", "source_table", "method", "dtype_label", "task"], nulls_last=True
        ),
    )


def test_shipped_database_is_valid_and_complete():
    db = _published(store.load(SHIPPED_DB))
    assert db.results.height == 1815
    assert set(db.models["family"]) == PUBLISHED_FAMILIES
    # every model with published perplexities has a release date with its source (forward
    # validation orders by it); of the accuracy-only models, neural-chat's date is not known
    dated = db.models.filter(pl.col("model").is_in(db.results["model"].implode()))
    assert dated["released"].null_count() == 0 and dated["released_source"].null_count() == 0
    assert db.models.filter(pl.col("family") == "Qwen3")["released"].min() > db.models["released"].min()
    # arXiv ids stay strings, not floats
    assert "2210.17323" in set(db.results["source"])
    assert "2308.13137" in set(db.results["source"])
    # nll is ln(ppl)
    r = db.results.head(50)
    assert all(math.isclose(n, math.log(p)) for n, p in zip(r["nll"], r["ppl"]))


def test_shipped_database_matches_a_fresh_import():
    fresh = _published(with_accuracy(import_published(PTQ, META, RELEASED), ACCURACY_CSV))
    shipped = _published(store.load(SHIPPED_DB))
    assert fresh.results.equals(shipped.results)
    assert fresh.models.equals(shipped.models)
    assert fresh.accuracy.height == 2584
    assert fresh.accuracy.equals(shipped.accuracy)


def test_import_marks_doubts_and_effective_bits():
    db = import_published(PTQ, META)
    res = db.results
    swapped = res.filter(pl.col("note").str.contains("look swapped"))
    assert swapped.height > 0 and set(swapped["doubt"]) == {"suspect"}
    layout = res.filter(pl.col("note").str.contains("layout problems"))
    assert set(layout["doubt"]) == {"caution"}
    clean = res.filter(pl.col("note") == "FP16 baseline")
    assert clean["doubt"].null_count() == clean.height
    # grouped int3-g128: 3 + (16 + 3) / 128
    g = res.filter(pl.col("dtype_label") == "int3-g128").row(0, named=True)
    assert g["w_bits_eff"] == pytest.approx(3 + 19 / 128)
    q40 = res.filter(pl.col("dtype_label") == "Q4_0").row(0, named=True)
    assert q40["w_kind"] == "int"
    assert set(res.filter(pl.col("method") == "llama.cpp-kquant")["w_kind"]) == {"kquant"}
    assert set(res.filter(pl.col("dtype_label").str.starts_with("avg-"))["w_kind"]) == {"mixed"}


def test_llama_cpp_rows_take_bits_per_weight_from_the_formats_table():
    """Training rows of a GGUF type carry the bits per weight a query naming it is
    predicted with (data/formats.csv), legacy blocks and k-quant mixes alike."""
    table = pl.read_csv(ROOT / "data" / "formats.csv").select(
        "name", "method", "w_bits", "group_size", "bits_per_weight"
    )
    res = import_published(PTQ, META).results.filter(pl.col("method").str.starts_with("llama.cpp"))
    joined = res.join(table, left_on="dtype_label", right_on="name", how="left", suffix="_table")
    assert joined.height > 0 and joined["bits_per_weight"].null_count() == 0
    assert (joined["w_bits_eff"] == joined["bits_per_weight"]).all()
    assert (joined["method"] == joined["method_table"]).all() and (joined["w_bits"] == joined["w_bits_table"]).all()
    assert (joined["group_size"] == joined["group_size_table"]).all()
    assert (joined["w_bits_eff"] > joined["w_bits"]).all()  # scales, and tensors kept at higher precision
    shipped = store.load(SHIPPED_DB).results.filter(pl.col("method").str.starts_with("llama.cpp"))
    assert shipped["w_bits_eff"].null_count() == 0


def test_cli_validate_and_summary_on_shipped_data(cli):
    r = cli("db", "validate", SHIPPED_DB)
    assert r.code == 0, r.err
    assert "valid (" in r.out
    db = store.load(SHIPPED_DB)
    assert f"valid ({db.models.height} models, {db.results.height} results" in r.out
    r = cli("db", "summary", SHIPPED_DB)
    assert r.code == 0
    for fam in ("OPT", "BLOOM", "LLaMA-1", "Llama-2", "Falcon", "Mistral", "Mixtral"):
        assert fam in r.out
    assert f"{db.results.height} results" in r.out


# --- bad input: CSV import --------------------------------------------------------


def _write_csv_variant(tmp_path, edit):
    lines = PTQ.read_text().splitlines()
    lines = edit(lines)
    p = tmp_path / "ptq.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _bad_w_bits(lines):
    cells = lines[5].split(",")
    cells[4] = "four"  # w_bits
    lines[5] = ",".join(cells)
    return lines


def _unknown_gguf_type(lines):
    i = next(i for i, line in enumerate(lines) if ",Q4_K_M," in line)
    lines[i] = lines[i].replace(",Q4_K_M,", ",Q4_K_Z,", 1)
    return lines


@pytest.mark.parametrize(
    "edit, messages",
    [
        (_bad_w_bits, ("row 6, column 'w_bits'", "'four'")),
        (_unknown_gguf_type, ("column 'dtype_label'", "'Q4_K_Z' is not a llama.cpp type of data/formats.csv")),
    ],
)
def test_import_reports_bad_cell_with_line_and_column(tmp_path, cli, edit, messages):
    p = _write_csv_variant(tmp_path, edit)
    out = tmp_path / "out"
    r = cli("db", "import-published", p, "--meta", META, "--out", out)
    assert r.code != 0
    assert all(m in r.err for m in messages), r.err
    assert not out.exists()


def test_import_reports_missing_column(tmp_path, cli):
    def edit(lines):
        return [",".join(c for i, c in enumerate(line.split(",")) if i != 11) for line in lines]

    p = _write_csv_variant(tmp_path, edit)
    r = cli("db", "import-published", p, "--meta", META, "--out", tmp_path / "out")
    assert r.code != 0 and "missing column(s) value" in r.err
    assert not (tmp_path / "out").exists()


def test_import_refuses_malformed_csv(tmp_path, cli):
    p = tmp_path / "bad.csv"
    p.write_bytes(b'family,model\n"unterminated,quote\nOPT\x00\x01,"x\n')
    r = cli("db", "import-published", p, "--meta", META, "--out", tmp_path / "out")
    assert r.code != 0 and "bad.csv" in r.err
    assert not (tmp_path / "out").exists()


def test_import_refuses_negative_and_nan_perplexity(tmp_path, cli):
    def edit(lines):
        for i, val in ((3, "-5.0"), (4, "nan")):
            cells = lines[i].split(",")
            cells[11] = val
            lines[i] = ",".join(cells)
        return lines

    p = _write_csv_variant(tmp_path, edit)
    r = cli("db", "import-published", p, "--meta", META, "--out", tmp_path / "out")
    assert r.code != 0
    assert "row 3, column 'ppl': value -5.0 must be > 1" in r.err
    assert "row 4, column 'ppl': is NaN" in r.err


# --- bad input: parquet shards ----------------------------------------------------


def _edit_results(db_dir, fn):
    db = store.load(db_dir)
    db.results = fn(db.results)
    store.save(db, db_dir, validate=False)


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda r: r.with_columns(
                pl.when(pl.int_range(pl.len()) == 9).then(float("nan")).otherwise(pl.col("ppl")).alias("ppl")
            ),
            "row 10, column 'ppl': is NaN",
        ),
        (
            lambda r: r.with_columns(
                pl.when(pl.int_range(pl.len()) == 2).then(-3.0).otherwise(pl.col("ppl")).alias("ppl")
            ),
            "row 3, column 'ppl': value -3.0 must be > 1",
        ),
        (
            lambda r: r.with_columns(
                pl.when(pl.int_range(pl.len()) == 4).then(40.0).otherwise(pl.col("w_bits")).alias("w_bits")
            ),
            "row 5, column 'w_bits': value 40.0 must be <= 32",
        ),
        (
            lambda r: r.with_columns(
                pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("GPTQQ")).otherwise(pl.col("method")).alias("method")
            ),
            "row 8, column 'method': unknown value 'GPTQQ' (did you mean 'GPTQ'?)",
        ),
        (lambda r: pl.concat([r, r.slice(20, 1)]), "duplicate key"),
        (lambda r: r.filter(pl.col("method") != "none"), "has no unquantized baseline"),
        (lambda r: r.with_columns(pl.col("w_bits").cast(pl.String)), "column 'w_bits': has type String"),
        (lambda r: r.drop("eval_set"), "missing column 'eval_set'"),
    ],
    ids=["nan", "negative", "bits-range", "enum", "duplicate", "baseline", "type", "missing-col"],
)
def test_validate_reports_bad_shard(shipped_copy, cli, edit, expected):
    _edit_results(shipped_copy, edit)
    r = cli("db", "validate", shipped_copy)
    assert r.code == 1
    assert expected in r.err
    assert str(shipped_copy / "results.parquet") in r.err


def test_validate_refuses_newer_schema_version(shipped_copy, cli):
    df = pl.read_parquet(shipped_copy / "results.parquet")
    df.write_parquet(
        shipped_copy / "results.parquet",
        metadata={META_VERSION_KEY: str(SCHEMA_VERSION + 1), META_TABLE_KEY: "results"},
    )
    r = cli("db", "validate", shipped_copy)
    assert r.code == 1 and f"schema v{SCHEMA_VERSION + 1}, newer than this qbayes reads" in r.err


def test_validate_refuses_corrupt_parquet(shipped_copy, cli):
    (shipped_copy / "models.parquet").write_bytes(b"PAR1 this is not parquet")
    r = cli("db", "validate", shipped_copy)
    assert r.code == 1 and "not a readable parquet file" in r.err


def test_validate_missing_directory(tmp_path, cli):
    r = cli("db", "validate", tmp_path / "nope")
    assert r.code == 1 and "no such database directory" in r.err


# --- atomic writes and merging ----------------------------------------------------


def test_save_is_atomic_when_a_write_fails(shipped_copy, monkeypatch):
    before = tree_digest(shipped_copy)
    db = store.load(shipped_copy)
    db.results = db.results.with_columns(pl.col("note").fill_null("changed"))
    calls = {"n": 0}
    real = pl.DataFrame.write_parquet

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pl.DataFrame, "write_parquet", flaky)
    with pytest.raises(OSError):
        store.save(db, shipped_copy)
    assert tree_digest(shipped_copy) == before
    assert not list(shipped_copy.glob("*.tmp"))


def _split_shards(tmp_path):
    db = store.load(SHIPPED_DB)
    opt = db.results.join(db.models.filter(pl.col("family") == "OPT").select("model"), on="model")
    rest = db.results.join(opt.select("model").unique(), on="model", how="anti")
    a = Database(models=db.models, results=opt)
    b = Database(models=db.models, results=rest)
    store.save(a, tmp_path / "a")
    store.save(b, tmp_path / "b")
    return db


def test_merge_shards_deduplicates_and_loses_nothing(tmp_path, cli):
    full = _split_shards(tmp_path)
    # merge a, b and a again: a's rows appear twice and must be deduplicated
    r = cli("db", "merge", tmp_path / "a", tmp_path / "b", tmp_path / "a", "--into", tmp_path / "m")
    assert r.code == 0, r.err
    merged = store.load(tmp_path / "m")
    key = list(TABLES["results"].key)
    assert merged.results.height == full.results.height
    assert merged.results.sort(key).equals(full.results.sort(key))
    # merging again into the same database adds nothing
    r = cli("db", "merge", tmp_path / "b", "--into", tmp_path / "m")
    assert r.code == 0 and "(0 new)" in r.out


def test_merge_conflict_is_reported_and_nothing_written(tmp_path, cli):
    _split_shards(tmp_path)
    b2 = store.load(tmp_path / "b")
    b2.results = b2.results.with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.col("ppl") * 1.5).otherwise(pl.col("ppl")).alias("ppl")
    )
    store.save(b2, tmp_path / "b2")
    r = cli("db", "merge", tmp_path / "a", tmp_path / "b", "--into", tmp_path / "m")
    before = tree_digest(tmp_path / "m")
    r = cli("db", "merge", tmp_path / "b2", "--into", tmp_path / "m")
    assert r.code == 2 and "1 conflicting row(s)" in r.err and "nothing written" in r.err
    assert tree_digest(tmp_path / "m") == before
    r = cli("db", "merge", tmp_path / "b2", "--into", tmp_path / "m", "--prefer", "newest")
    assert r.code == 0 and "conflict resolved" in r.err


def test_merge_refuses_invalid_shard_without_touching_target(tmp_path, shipped_copy, cli):
    _split_shards(tmp_path)
    cli("db", "merge", tmp_path / "a", "--into", tmp_path / "m")
    before = tree_digest(tmp_path / "m")
    _edit_results(shipped_copy, lambda r: r.with_columns(pl.lit(0.5).alias("ppl")))
    r = cli("db", "merge", shipped_copy, "--into", tmp_path / "m")
    assert r.code == 2 and "must be > 1" in r.err
    assert tree_digest(tmp_path / "m") == before


def test_merge_in_memory_keeps_newest_on_request():
    db = store.load(SHIPPED_DB)
    one = db.results.head(1)
    newer = one.with_columns(
        pl.col("ppl") * 2,
        pl.lit("2026-01-01").str.to_datetime(time_zone="UTC").dt.cast_time_unit("us").alias("created_at"),
    )
    a = Database(models=db.models, results=one)
    b = Database(models=db.models, results=newer)
    with pytest.raises(MergeConflict):
        merge([a, b])
    m, dropped = merge([a, b], prefer="newest")
    assert m.results.height == 1 and m.results["ppl"][0] == newer["ppl"][0] and len(dropped) == 1


def test_import_refuses_bad_release_dates(tmp_path, cli):
    bad = tmp_path / "release_dates.csv"
    lines = RELEASED.read_text().splitlines()
    lines[1] = lines[1].replace("2022-05-03", "May 2022")  # OPT-125M: not a date
    lines.append("OPT-999B,2022-05-03,nowhere")  # not in model_meta.csv
    lines.append(lines[2])  # OPT-350M twice
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    r = cli("db", "import-published", PTQ, "--meta", META, "--released", bad, "--out", out)
    assert r.code != 0
    assert "row 2, column 'released': 'May 2022' is not a valid Date" in r.err
    assert "model 'OPT-999B' is not in the models table" in r.err
    assert "model 'OPT-350M' is listed more than once" in r.err
    assert not out.exists()


def test_database_written_before_release_dates_still_loads(tmp_path):
    db = store.load(SHIPPED_DB)
    old = tmp_path / "old"
    store.save(db, old)
    models = pl.read_parquet(old / "models.parquet").drop("released", "released_source")
    models.write_parquet(old / "models.parquet")  # as a qbayes before release dates wrote it
    back = store.load(old)
    assert back.models["released"].null_count() == back.models.height


# --- published task accuracies ------------------------------------------------------


def _accuracy_rows(db: Database, **eq) -> pl.DataFrame:
    return db.accuracy.filter(*[pl.col(c) == v for c, v in eq.items()])


def test_accuracy_import_maps_methods_labels_and_doubts():
    db = with_accuracy(import_published(PTQ, META), ACCURACY_CSV)
    base = _accuracy_rows(db, model="Qwen2-7B-Instruct", task="mmlu", method="none")
    assert base["dtype_label"].to_list() == ["bf16"] and base["w_kind"].to_list() == ["float"]
    # a method printed with its settings keeps them in the label, under one method name
    variants = db.accuracy.filter(pl.col("dtype_label").str.contains(r"\[iters="))
    assert variants.height > 0 and set(variants["method"]) == {"AutoRound"}
    assert variants.filter(pl.col("dtype_label").str.starts_with("int2-g32 [")).height > 0
    # Qwen2's official checkpoints do not say their group size: kept with caution
    qwen_q = db.accuracy.filter(pl.col("model").str.starts_with("Qwen2") & (pl.col("method") != "none"))
    assert set(qwen_q["doubt"]) == {"caution"} and qwen_q["shots"].null_count() == qwen_q.height
    g = _accuracy_rows(db, model="LLaMA-7B", method="GPTQ", dtype_label="int3-g128", task="piqa").row(0, named=True)
    assert g["w_bits_eff"] == pytest.approx(3 + 19 / 128) and 50 < g["acc"] < 100


def _write_accuracy_variant(tmp_path, edit):
    lines = edit(ACCURACY_CSV.read_text().splitlines())
    p = tmp_path / "acc.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_accuracy_import_refuses_a_row_without_its_baseline_and_writes_nothing(tmp_path, cli):
    # drop Mistral-7B-v0.1's fp16 mmlu row of the first table (CSV line 2)
    p = _write_accuracy_variant(tmp_path, lambda lines: [lines[0], *lines[2:]])
    out = tmp_path / "out"
    r = cli("db", "import-published", PTQ, "--meta", META, "--accuracy", p, "--out", out)
    assert r.code != 0
    assert "no unquantized baseline for model 'Mistral-7B-v0.1', task 'mmlu'" in r.err, r.err
    assert not out.exists()


def test_accuracy_import_refuses_bad_cells_by_line(tmp_path, cli):
    def edit(lines):
        lines[5] = lines[5].replace("Mistral-7B-v0.1", "Mistral-7B-v9", 1)  # CSV line 6
        return lines

    p = _write_accuracy_variant(tmp_path, edit)
    out = tmp_path / "out"
    r = cli("db", "import-published", PTQ, "--meta", META, "--accuracy", p, "--out", out)
    assert r.code != 0
    assert "row 6, column 'model': model 'Mistral-7B-v9' is not in the models table" in r.err, r.err
    assert not out.exists()
    p = _write_accuracy_variant(tmp_path, lambda lines: lines[:3] + [lines[3].replace(",61.27,", ",101.5,")])
    r = cli("db", "import-published", PTQ, "--meta", META, "--accuracy", p, "--out", out)
    assert r.code != 0 and "column 'acc': value 101.5 must be <= 100" in r.err, r.err
    assert not out.exists()

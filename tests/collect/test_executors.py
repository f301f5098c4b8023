"""Model manifests, the executor registry and the task split (no torch, no Ray needed)."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from qbayes.collect.executors import make
from qbayes.collect.executors.base import CollectRequest
from qbayes.collect.executors.tasks import split
from qbayes.collect.grid import load_grid
from qbayes.collect.manifest import ModelEntry, model_entries, read_manifest, write_manifest
from qbayes.errors import QBayesError

from collect_support import TINY


def test_manifest_columns_relative_paths_names_and_extra_columns(tmp_path):
    (tmp_path / "zoo").mkdir()
    f = tmp_path / "zoo" / "manifest.csv"
    f.write_text(
        "\ufeffpath,family,name,params,steps\n"
        "llama-s1/t2M,zoo-llama,zl-1,2000000,100\n"
        f"{tmp_path / 'abs' / 'm2'},zoo-opt,,3000000,100\n"
        "\n"
    )
    a, b = read_manifest(f)
    assert a == ModelEntry(tmp_path / "zoo" / "llama-s1" / "t2M", "zoo-llama", "zl-1")
    assert b.path == tmp_path / "abs" / "m2" and b.family == "zoo-opt" and b.name == "m2"
    back = read_manifest(write_manifest(tmp_path / "copy.csv", [a, b]))
    assert back == (a, b)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pth,family\nm,f\n", "no column 'path' (did you mean 'pth'?)"),
        ("path,familly\nm,f\n", "no column 'family' (did you mean 'familly'?)"),
        ("", "no column 'path'"),
        ("path,family\nm,\n", "line 2: empty 'family'"),
        ("path,family,name\n", "lists no models"),
        ("path,family,name\na/m,f,\nb/m,f,\n", "two models are named 'm'"),
    ],
)
def test_manifest_errors(tmp_path, text, message):
    f = tmp_path / "m.csv"
    f.write_text(text)
    with pytest.raises(QBayesError) as err:
        model_entries(manifest=f)
    assert message in str(err.value)


def test_model_options():
    with pytest.raises(QBayesError, match="no such model manifest"):
        read_manifest("nowhere.csv")
    with pytest.raises(QBayesError, match="no model to collect"):
        model_entries()
    with pytest.raises(QBayesError, match="--model needs --family"):
        model_entries(models=("a",))
    with pytest.raises(QBayesError, match="--name names a single --model"):
        model_entries(models=("a", "b"), family="f", name="x")
    with pytest.raises(QBayesError, match="two models are named 'm'"):
        model_entries(models=("x/m", "y/m"), family="f")
    a, b = model_entries(models=("x/m1", "x/m2"), family="f")
    assert (a.name, b.name, b.family) == ("m1", "m2", "f")


def test_unknown_executor_suggests_and_local_refuses_ray_options(cli, tmp_path):
    with pytest.raises(QBayesError, match=r"unknown executor 'rey' \(did you mean 'ray'\?\); known: local, ray"):
        make("rey")
    with pytest.raises(QBayesError, match="--address is for --executor ray"):
        make("local", address="10.0.0.1:6379")
    with pytest.raises(QBayesError, match="--retries must be 0 or more"):
        make("ray", retries=-1)
    r = cli("collect", "--model", tmp_path / "m", "--family", "toy", "--out", tmp_path / "o", "--executor", "rey")
    assert r.code == 2 and "unknown executor 'rey' (did you mean 'ray'?)" in r.err
    assert not (tmp_path / "o").exists()


def test_missing_ray_is_a_clear_error(monkeypatch):
    from qbayes.collect.executors.ray_executor import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(QBayesError, match=r"needs Ray .*pip install -e '\.\[ray\]'"):
        import_ray()


def test_split_one_task_per_model_and_method_after_a_baseline_task(tmp_path):
    grid = load_grid(TINY)
    models = (ModelEntry.make(tmp_path / "a", "f"), ModelEntry.make(tmp_path / "b", "f"))
    tasks = split(CollectRequest(models=models, grid=grid, out=tmp_path / "out"))
    methods = [m.name for m in grid.methods]
    assert [t.task_id for t in tasks] == ["a/baseline", "b/baseline"] + [
        f"{m}/{k}" for m in ("a", "b") for k in ("features", *methods)
    ]
    by_id = {t.task_id: t for t in tasks}
    base, feats, rtn = by_id["a/baseline"], by_id["a/features"], by_id["a/rtn"]
    assert not base.after_baseline and feats.after_baseline and rtn.after_baseline
    assert base.grid.methods == () and not base.grid.features.landscape and not base.grid.features.outliers
    assert feats.grid.methods == () and feats.grid.features == grid.features
    assert [m.name for m in rtn.grid.methods] == ["rtn"] and not rtn.grid.features.landscape
    assert rtn.grid.features.per_layer_sqnr and rtn.grid.eval == grid.eval
    assert rtn.shard_dir == (tmp_path / "out" / "_tasks" / "a__rtn").resolve()
    no_features = dataclasses.replace(
        grid, features=dataclasses.replace(grid.features, landscape=False, outliers=False)
    )
    ids = [t.task_id for t in split(CollectRequest(models=models[:1], grid=no_features, out=tmp_path))]
    assert "a/features" not in ids and len(ids) == 1 + len(methods)

"""``qbayes collect --tasks``: lm-evaluation-harness task accuracy on the models a run
measures, with a task defined by local files (the hub is unreachable here; a hub task
takes the same path through lm-eval)."""

from __future__ import annotations

import json
import math
from importlib import metadata

import pytest

pytest.importorskip("torch")
pytest.importorskip("lm_eval")

import polars as pl  # noqa: E402
import torch  # noqa: E402

from qbayes.cli import main  # noqa: E402
from qbayes.collect import texts  # noqa: E402
from qbayes.collect.grid import grid_from_dict  # noqa: E402
from qbayes.db import store  # noqa: E402
from qbayes.errors import QBayesError  # noqa: E402

from collect_support import write_grid  # noqa: E402

TASK = "qbayes_toy_continuation"
ITEMS = 30


def run_cli(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code
    return 0


def make_items() -> list[dict]:
    """Two-choice items from the Shakespeare evaluation text: a line's first half, its own
    second half against another line's."""
    lines = [line.strip() for line in texts.load_text("shakespeare", "eval").split("\n") if len(line.split()) >= 8]
    items = []
    for i in range(ITEMS):
        own, other = lines[2 * i].split(), lines[2 * i + 1].split()
        cut = len(own) // 2
        right, wrong = " ".join(own[cut:]), " ".join(other[cut:])
        choices = [right, wrong] if i % 2 == 0 else [wrong, right]
        items.append({"context": " ".join(own[:cut]), "choices": choices, "label": choices.index(right)})
    return items


def write_task(folder, items: list[dict]) -> None:
    """A multiple-choice task in lm-eval's YAML format reading a local JSON lines file."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    (folder / "toy.yaml").write_text(
        f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.0
""",
        encoding="utf-8",
    )


METHODS = """
[methods.rtn]
formats = ["int8", "int2-g32"]
"""


@pytest.fixture(scope="module")
def run(toy_models, tmp_path_factory):
    """One collection with the task named in the grid file, its directory relative to it."""
    root = tmp_path_factory.mktemp("tasks")
    items = make_items()
    write_task(root / "mytasks", items)
    tasks = f'[tasks]\nnames = ["{TASK}"]\ninclude = ["mytasks"]\nbatch_size = 4\n'
    grid = write_grid(root / "grid.toml", methods=METHODS, extra=tasks)
    out = root / "shard"
    args = ("collect", "--model", toy_models["llama"], "--family", "toy", "--grid", grid, "--out", out)
    code = run_cli(*args, "--no-progress")
    assert code == 0
    return {"db": store.load(out), "items": items, "args": args, "model": toy_models["llama"], "root": root}


def hand_accuracy(model_dir, items: list[dict]) -> float:
    """Percent of items whose answer has the higher log-likelihood given the context, as
    lm-eval scores a multiple-choice item (continuation = " " + choice), computed here."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    right = 0
    for it in items:
        lls = []
        for choice in it["choices"]:
            ctx = tok(it["context"], add_special_tokens=False)["input_ids"]
            cont = tok(it["context"] + " " + choice, add_special_tokens=False)["input_ids"][len(ctx) :]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids[:, :-1]).logits[0].double(), dim=-1)
            positions = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
            lls.append(sum(float(logp[p, t]) for p, t in zip(positions, cont)))
        right += int(max(range(len(lls)), key=lls.__getitem__) == it["label"])
    return 100.0 * right / len(items)


def test_every_model_of_the_run_gets_task_rows_with_versions(run):
    db = run["db"]
    acc = db.accuracy
    assert set(acc["task"]) == {TASK}
    assert set(acc["metric"]) == {"acc", "acc_norm"}
    # the baseline and each quantized configuration, each with both metrics
    assert sorted(acc.filter(pl.col("metric") == "acc")["dtype_label"]) == ["fp32", "int2-g32", "int8"]
    assert (acc["n_items"] == ITEMS).all()
    assert (acc["shots"] == 0).all()
    assert set(acc["task_version"]) == {"2.0"}
    assert set(acc["harness_version"]) == {metadata.version("lm-eval")}
    assert set(acc["source_kind"]) == {"collector"} and set(acc["source"]) == {"qbayes-collect"}
    assert json.loads(acc["lib_versions"][0])["lm-eval"] == metadata.version("lm-eval")
    # the rows belong to the same run and configurations as the perplexity rows
    assert set(acc["run_id"]) == set(db.results["run_id"])
    joined = acc.join(
        db.results, on=["model", "method", "dtype_label", "w_bits", "group_size"], how="inner", nulls_equal=True
    )
    assert joined.select("dtype_label").n_unique() == 3
    for r in acc.iter_rows(named=True):
        k = round(r["acc"] * ITEMS / 100)
        assert r["acc"] == pytest.approx(100 * k / ITEMS)  # a share of the items
        p = r["acc"] / 100
        # lm-eval's standard error of a mean of 0/1 scores: sample sd / sqrt(n)
        assert r["acc_se"] == pytest.approx(100 * math.sqrt(p * (1 - p) / (ITEMS - 1)), rel=1e-9)


def test_baseline_accuracy_is_the_models_own_choice_of_answers(run):
    base = run["db"].accuracy.filter((pl.col("method") == "none") & (pl.col("metric") == "acc"))
    assert base.height == 1
    assert base["acc"][0] == pytest.approx(hand_accuracy(run["model"], run["items"]))


def test_a_rerun_skips_the_task_steps_already_in_the_shard(run, capsys):
    before = run["db"].accuracy.sort("dtype_label", "metric")
    assert run_cli(*run["args"], "--no-progress") == 0
    assert "0 step(s) ran" in capsys.readouterr().out
    after = store.load(run["args"][-1]).accuracy.sort("dtype_label", "metric")
    assert after["created_at"].to_list() == before["created_at"].to_list()


def test_an_unknown_task_is_refused_by_name_before_anything_is_loaded(run, capsys):
    out = run["root"] / "refused"
    code = run_cli(
        "collect",
        "--model",
        run["model"],
        "--family",
        "toy",
        "--grid",
        run["args"][6],
        "--tasks",
        "qbayes_toy_continuaton,arc_easy",
        "--task-include",
        run["root"] / "mytasks",
        "--out",
        out,
        "--no-progress",
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "qbayes_toy_continuaton" in err and f"close: {TASK}" in err
    assert "'arc_easy'" not in err  # lm-eval's own tasks are known (their data is the hub's business)
    assert not out.exists()


def test_a_task_whose_data_cannot_be_read_is_refused_before_anything_is_loaded(run, capsys):
    broken = run["root"] / "broken"
    write_task(broken, make_items())
    (broken / "items.jsonl").unlink()
    out = run["root"] / "refused-data"
    args = ("--grid", run["args"][6], "--tasks", TASK, "--task-include", broken, "--out", out)
    code = run_cli("collect", "--model", run["model"], "--family", "toy", *args, "--no-progress")
    err = capsys.readouterr().err
    assert code == 2
    assert f"task '{TASK}': cannot be loaded" in err
    assert not out.exists()


def test_a_failing_evaluation_fails_the_tasks_alone(run, monkeypatch, capsys):
    """lm-eval failing on a model: its perplexity rows are kept, each model's tasks are
    recorded as failed, the run exits 1."""
    from qbayes.collect import tasks_eval

    def broken(*args, **kwargs):
        raise RuntimeError("the harness broke")

    monkeypatch.setattr(tasks_eval, "score", broken)
    out = run["root"] / "failing"
    args = ("--grid", run["args"][6], "--out", out, "--no-progress")
    assert run_cli("collect", "--model", run["model"], "--family", "toy", *args) == 1
    db = store.load(out)
    assert db.accuracy.height == 0
    assert sorted(db.results["dtype_label"]) == ["fp32", "int2-g32", "int8"]
    failed = db.failures.filter(pl.col("stage") == "tasks")
    assert sorted(failed["config"]) == ["baseline/tasks", "rtn/int2-g32/-/tasks", "rtn/int8/-/tasks"]
    assert all("the harness broke" in m for m in failed["message"])


def test_task_settings_are_checked_in_the_grid_file():
    base = {"methods": {"rtn": {"formats": ["int8"]}}}
    with pytest.raises(QBayesError, match="tasks.shots must be 0 or more"):
        grid_from_dict({**base, "tasks": {"names": ["piqa"], "shots": -1}}, name="g", where="g.toml")
    with pytest.raises(QBayesError, match="unknown key 'name'"):
        grid_from_dict({**base, "tasks": {"name": ["piqa"]}}, name="g", where="g.toml")
    grid = grid_from_dict({**base, "tasks": {"names": ["piqa"]}}, name="g", where="g.toml")
    assert grid.select(tasks=("arc_easy",)).tasks.names == ("arc_easy",)


def test_rows_are_taken_from_accuracy_like_metrics_only():
    """From lm-eval's result dictionary: metrics where higher is better and the value is a
    share; a filter other than "none" stays in the metric name; a missing standard error
    ("N/A") is left empty."""
    from qbayes.collect.tasks_eval import parse_results

    out = {
        "results": {
            "gen": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A", "alias": "gen"},
            "ppl": {"word_perplexity,none": 31.5, "acc,none": 0.5, "acc_stderr,none": 0.1},
        },
        "higher_is_better": {"gen": {"exact_match": True}, "ppl": {"word_perplexity": False, "acc": True}},
        "versions": {"gen": 3, "ppl": 1.0},
        "n-shot": {"gen": 5, "ppl": 0},
        "n-samples": {"gen": {"original": 80, "effective": 40}, "ppl": {"original": 26, "effective": 26}},
    }
    rows = {(s.task, s.metric): s for s in parse_results(out, shots=0)}
    assert set(rows) == {("gen", "exact_match,strict-match"), ("ppl", "acc")}
    gen, acc = rows["gen", "exact_match,strict-match"], rows["ppl", "acc"]
    assert (gen.acc, gen.acc_se, gen.shots, gen.n_items, gen.task_version) == (25.0, None, 5, 40, "3")
    assert (acc.acc, acc.acc_se, acc.n_items, acc.task_version) == (50.0, 10.0, 26, "1.0")

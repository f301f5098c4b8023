"""The validation summary's records and their JSON document: the shipped files load, every
key survives the round trip, and the keys written are the records' fields."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest

from qbayes.errors import QBayesError
from qbayes.evaluation.summary import FoldConvergence, FoldScores, ValidationSettings, ValidationSummary

from helpers import ROOT

SHIPPED = [ROOT / "reports" / "validation.json", ROOT / "reports" / "validation-forward.json"]
ROW_LISTS = ("overall", "overall_3bits", "per_family", "per_cell", "calibration", "gaps", "brier")


def _flat_fields(kind) -> set[str]:
    """The JSON keys of a record of ``kind``: its fields, a nested record's in its place."""
    out = set()
    for name, t in typing.get_type_hints(kind).items():
        nested = [a for a in (t, *typing.get_args(t)) if dataclasses.is_dataclass(a)]
        out |= _flat_fields(nested[0]) if nested else {name}
    return out


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_round_trip_with_every_key(path):
    raw = json.loads(path.read_text())
    record = ValidationSummary.from_dict(raw, source=path)
    assert record.to_dict() == raw
    assert ValidationSummary.from_dict(record.to_dict()) == record
    assert json.dumps(record.to_dict(), indent=1, allow_nan=False) == json.dumps(raw, indent=1, allow_nan=False)
    # the keys written are the records' fields, at each level
    doc = record.to_dict()
    assert set(doc) == {f.name for f in dataclasses.fields(ValidationSummary)}
    # a hand-written note (the shipped files say where each model's records come from) is kept
    settings = set(doc["settings"]) - set(record.settings.extra)
    assert settings == {f.name for f in dataclasses.fields(ValidationSettings)} - {"extra"}
    for key in ROW_LISTS:
        records, rows = getattr(record, key), doc[key]
        assert rows and len(rows) == len(records)
        for r, row in zip(records, rows):
            expected = _flat_fields(type(r))
            if isinstance(r, FoldScores) and r.convergence is None:  # a baseline: no fit, no convergence
                expected -= {f.name for f in dataclasses.fields(FoldConvergence)}
            assert set(row) == expected, (key, row)
    # the Bayesian models' folds carry their convergence, the baselines' do not
    assert {r.model for r in record.per_family if r.convergence is not None} == {"hierarchical", "pooled"}
    assert record.settings.scheme == ("forward" if "forward" in path.name else "lofo")


def test_a_file_before_the_optional_parts_loads_with_them_empty():
    raw = json.loads(SHIPPED[0].read_text())
    old = {k: v for k, v in raw.items() if k not in ("per_cell", "overall_3bits", "gaps", "settings")}
    record = ValidationSummary.from_dict(old)
    assert record.per_cell == () and record.overall_3bits == () and record.gaps == ()
    assert record.settings == ValidationSettings() and record.settings.scheme == "lofo"
    assert record.to_dict() == {**old, "overall_3bits": [], "per_cell": [], "gaps": [], "settings": {"scheme": "lofo"}}


def test_missing_and_unknown_values():
    doc = {
        "models": ["x"],
        "overall": [{"model": "x", "n": 3, "mdae": None, "crps": float("nan")}],
        "per_family": [],
        "calibration": [],
        "settings": {"scheme": "forward", "note": "by hand"},
    }
    record = ValidationSummary.from_dict(doc)
    s = record.overall[0].scores
    assert s.n == 3 and all(math.isnan(getattr(s, m)) for m in ("mdae", "mae", "cov50", "cov90", "crps"))
    assert record == ValidationSummary.from_dict(record.to_dict())  # NaN scores compare equal
    assert record.settings.extra == {"note": "by hand"}
    out = record.to_dict()
    assert out["overall"] == [
        {"model": "x", "n": 3, "mdae": None, "mae": None, "cov50": None, "cov90": None, "crps": None}
    ]
    assert out["settings"] == {"scheme": "forward", "note": "by hand"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"settings": {"draws": "many"}}, r"settings\.draws: expected a number or null, got 'many'"),
        ({"settings": {"folds": {"A": "B"}}}, r"settings\.folds\.A: expected a list of names"),
        ({"settings": []}, "'settings' must be an object"),
        ({"overall": [{"model": "x", "n": 2.5}]}, r"overall\[0\]\.n: expected a whole number or null, got 2\.5"),
        ({"overall": [{"model": 3}]}, r"overall\[0\]\.model: expected a name, got 3"),
        (
            {"per_family": [{"family": "A", "model": "x", "divergences": "none"}]},
            r"per_family\[0\]\.divergences: expected a number or null",
        ),
        ({"calibration": [{"model": "x", "nominal": 0.5}]}, r"calibration\[0\]: missing observed"),
        ({"gaps": {}}, "'gaps' must be a list"),
    ],
)
def test_bad_fields_are_refused_by_name(change, message):
    raw = {**json.loads(SHIPPED[0].read_text()), **change}
    with pytest.raises(QBayesError, match=message):
        ValidationSummary.from_dict(raw, source="v.json")

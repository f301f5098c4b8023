"""Print the README's validation table from the validation files, one row per model and
scheme: median absolute error over all held-out rows and over rows of 3 or more bits, 90%
interval coverage and CRPS. Usage:

    python bench/validation_table.py reports/validation.json reports/validation-forward.json
"""

from __future__ import annotations

import sys

from qbayes.evaluation.summary import Scores
from qbayes.report import validation

SCHEMES = {"lofo": "leave one family out", "forward": "forward"}


def table(paths: list[str]) -> str:
    vals = [validation.load(p) for p in paths]
    head = ["model"]
    for v in vals:
        name = SCHEMES.get(v.settings.scheme, "?")
        head += [f"{name}: MdAE", "MdAE ≥ 3 bits", "90% cov.", "CRPS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = [
        (
            {k: min(getattr(r.scores, k) for r in v.overall) for k in ("mdae", "crps")},
            min((r.scores.mdae for r in v.overall_3bits), default=None),
        )
        for v in vals
    ]

    def bold(x: float, b) -> str:
        return f"**{x:.4f}**" if b is not None and x == b else f"{x:.4f}"

    for model in vals[0].models:
        cells = [model]
        for v, (b, b3) in zip(vals, best):
            all_rows = {r.model: r.scores for r in v.overall}[model]
            three = {r.model: r.scores for r in v.overall_3bits}.get(model, Scores())
            cells += [
                bold(all_rows.mdae, b["mdae"]),
                bold(three.mdae, b3),
                f"{all_rows.cov90:.3f}",
                bold(all_rows.crps, b["crps"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(table(sys.argv[1:]))

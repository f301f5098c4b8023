"""Held-out prediction, shared by the D/N study (:mod:`qbayes.zoo.analysis`) and the
feature study (:mod:`qbayes.zoo.analysis_features`): the leave-one-out schemes, the
one-hot coding of their designs, and the median absolute errors (MdAE) per fold and
overall of a held-out prediction.
"""

from __future__ import annotations

import numpy as np

from qbayes.zoo.analysis_result import Fold, HeldOut, Overall, Score

SCHEMES = {"architecture": "family", "size": "size"}  # leave-one-out scheme -> grouping column


def onehot(values, levels=None) -> np.ndarray:
    values = np.asarray(values, dtype=object)
    levels = sorted(set(values.tolist())) if levels is None else list(levels)
    return (values[:, None] == np.asarray(levels, dtype=object)[None, :]).astype(float)


LN_PRED_MAX = 5.0  # ln delta; a 150-nat degradation is beyond any collapse


def mdae_pair(delta: np.ndarray, y: np.ndarray, p: np.ndarray, *, sigma: float) -> Score:
    """MdAE of delta (prediction exp(p) - sigma) and of the log target."""
    ok = np.isfinite(p)
    if not ok.any():
        return Score(mdae_delta=None, mdae_ln=None, n_predicted=0)
    # a ridge extrapolating to a held-out size can predict absurd ln values; cap them (the
    # median is unaffected, exp() no longer overflows)
    pred_delta = np.exp(np.minimum(p[ok], LN_PRED_MAX)) - sigma
    return Score(
        mdae_delta=float(np.median(np.abs(pred_delta - delta[ok]))),
        mdae_ln=float(np.median(np.abs(p[ok] - y[ok]))),
        n_predicted=int(ok.sum()),
    )


def scores(delta: np.ndarray, y: np.ndarray, pred: dict, groups: np.ndarray, *, sigma: float) -> HeldOut:
    """Per-fold and overall :func:`mdae_pair` for each prediction in ``pred`` (a dict of
    arrays, possibly nested), keeping the nesting."""

    def tree(p, mask):
        if isinstance(p, dict):
            return {k: tree(v, mask) for k, v in p.items()}
        return mdae_pair(delta[mask], y[mask], p[mask], sigma=sigma)

    folds = [Fold(fold=str(g), n=int((groups == g).sum()), scores=tree(pred, groups == g)) for g in np.unique(groups)]
    return HeldOut(folds=folds, overall=Overall(n=len(y), scores=tree(pred, np.ones(len(y), dtype=bool))))

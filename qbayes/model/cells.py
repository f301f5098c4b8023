"""Seen cells conditioned on their own training rows: the cut model of a spec with ``[cut]``.

A cell is one family, method, bit width and grouping (encoding.cell_keys); a model cell the
same for one model. The shared parameters are fitted as the spec says, without cell terms;
then, per posterior draw s, each level of a [cut] grouping the fit has seen gets an offset b on
the likelihood's scale, ln(delta + shift), with the prior N(0, sd^2), conditioned on that
level's training rows under the fit's own likelihood, with the draw's shared parameters and
the offsets of the groupings before it (spec.CUT_GROUPINGS: a model cell after its cell) held
fixed. It is a "cut": a level's rows update its offset, and the offset does not feed back
into the shared parameters, which the MCMC fitted without it. The posterior of b is
one-dimensional per level and draw, so it is computed on a grid and one value is drawn from it.

What it buys: a cell the law cannot bend to (LLaMA's RTN at 3 bits with groups of 128 degrades
far more gently than OPT's, whose rows set RTN's effects) is predicted from its own rows when
a user asks for it or for another model of that family. What it leaves alone: a family the fit
has not seen has no seen cells, so forward and leave-one-family-out validation, and every
prediction for a new family, are exactly those of the shared model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from qbayes.model import collapse

COARSE, FINE = 24, 32  # points of the grid that finds the posterior, and of the one that draws from it
EDGE = 4.0  # the first pass spans the prior's +-EDGE sds and every residual
FAR = 9.0  # collapse sds: a row this far from its collapse level has a collapse density below e^-40
BLOCK = 256  # draws per block of the grid's arithmetic
TINY = 1e-9  # the second pass spans where the first pass's weight exceeds TINY of its largest


@dataclass(frozen=True)
class CellRows:
    """One cell's training rows under the draws, (n, S) each unless said: ``y`` (n,) the
    observed ln(delta + shift); ``loc`` and ``scale`` the Student-t's location and scale;
    ``nu`` and ``const`` (S,) its dof and log-normaliser; for a [collapse] spec ``logit`` the
    collapse probability's logit at ``loc``, ``slope`` (S,) how it grows per unit of location
    (collapse.logit is linear in ln(mu + shift)), ``col_loc`` (n, S) and ``col_sd`` (S,) the
    collapse's normal; None without."""

    y: np.ndarray
    loc: np.ndarray
    scale: np.ndarray
    nu: np.ndarray
    const: np.ndarray
    logit: np.ndarray | None = None
    slope: np.ndarray | None = None
    col_loc: np.ndarray | None = None
    col_sd: np.ndarray | None = None

    def take(self, sel: np.ndarray) -> CellRows:
        """The rows selected by ``sel``."""
        pick = {
            f: getattr(self, f)[sel] for f in ("y", "loc", "scale", "logit", "col_loc") if getattr(self, f) is not None
        }
        return dataclasses.replace(self, **pick)

    def shifted(self, offset: np.ndarray, collapse_offset: np.ndarray | None = None) -> CellRows:
        """The rows with ``offset`` (n, S) added to their location (and the collapse logit that
        follows it), and ``collapse_offset`` to their collapse level's."""
        logit = None if self.logit is None else self.logit + self.slope * offset
        col_loc = self.col_loc if collapse_offset is None else self.col_loc + collapse_offset
        return dataclasses.replace(self, loc=self.loc + offset, logit=logit, col_loc=col_loc)


_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])  # scipy.special would add seconds to start-up


def log_t_const(nu: np.ndarray) -> np.ndarray:
    """The Student-t density's log-normaliser per dof: ln Gamma((nu+1)/2) - ln Gamma(nu/2) - ln(nu pi)/2."""
    return _lgamma((nu + 1) / 2) - _lgamma(nu / 2) - 0.5 * np.log(nu * np.pi)


def log_likelihood(rows: CellRows, b: np.ndarray) -> np.ndarray:
    """(G, S): the log-likelihood of the cell's rows with offsets ``b`` (G, S) added to the
    location, summed over rows. Single precision (it is compared across a grid only) in
    blocks of draws that stay in cache. A row further than :data:`FAR` collapse sds from its
    collapse level cannot be a collapsed row: it takes the law's density alone."""
    f4 = np.float32
    # x = (y - loc - b) / (scale sqrt(nu)) = r - b w; the law's log density is
    # const - ln scale - (nu + 1) / 2 ln(1 + x^2)
    w = (1.0 / (rows.scale * np.sqrt(rows.nu))).astype(f4)
    r = (rows.y[:, None] - rows.loc).astype(f4) * w
    out = (rows.const - np.log(rows.scale)).sum(axis=0)  # (S,)
    half = (rows.nu + 1) / 2
    mixes = np.zeros(len(rows.y), dtype=bool)
    if rows.logit is not None:
        mixes = (np.abs(rows.y[:, None] - rows.col_loc) < FAR * rows.col_sd).any(axis=1)
    law = np.empty(b.shape)
    bf = b.astype(f4)
    for blk in range(0, b.shape[1], BLOCK):
        sl = slice(blk, blk + BLOCK)
        x = r[None, ~mixes, sl] - bf[:, None, sl] * w[None, ~mixes, sl]
        np.square(x, out=x)
        law[:, sl] = np.log1p(x, out=x).sum(axis=1, dtype=np.float64)
    out = out - half * law
    if not mixes.any():
        return out
    x = r[None, mixes] - bf[:, None] * w[None, mixes]
    dens = (-half).astype(f4) * np.log1p(x * x)  # + const - ln scale, already in out
    logit = rows.logit[mixes][None].astype(f4) + (rows.slope * b[:, None]).astype(f4)
    z = (rows.y[mixes, None] - rows.col_loc[mixes]) / rows.col_sd
    col = -0.5 * z**2 - 0.5 * np.log(2 * np.pi) - np.log(rows.col_sd) - rows.const + np.log(rows.scale[mixes])
    # ln((1 - p) law + p col) = logaddexp(law, col + logit) - softplus(logit)
    mixed = np.logaddexp(dens, col.astype(f4)[None] + logit)
    mixed -= np.logaddexp(f4(0.0), logit, out=logit)
    return out + mixed.sum(axis=1, dtype=np.float64)


def _grid(lo: np.ndarray, hi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, S) midpoints of n equal bins between ``lo`` and ``hi`` (S,), and the bin width (S,)."""
    step = (hi - lo) / n
    return lo + step * (np.arange(n)[:, None] + 0.5), step


def collapse_log_likelihood(rows: CellRows, c: np.ndarray) -> np.ndarray:
    """(G, S): the mixture's log-likelihood (collapse.log_density) with offsets ``c`` (G, S)
    added to the collapse level's location instead of the law's, for the rows that can reach
    it (the others add a constant)."""
    near = (np.abs(rows.y[:, None] - rows.col_loc) < FAR * rows.col_sd + np.abs(c).max(axis=0)).any(axis=1)
    r = rows.take(near)
    with np.errstate(over="ignore"):  # a logit below -709: p = 0, the law's density alone
        prob = 1.0 / (1.0 + np.exp(-r.logit))
    dens = collapse.log_density(r.y[:, None], r.loc, r.scale, r.nu, r.const, r.col_loc + c[:, None], r.col_sd, prob)
    return dens.sum(axis=1)


def _log_posterior(loglik, b: np.ndarray, sd: float) -> np.ndarray:
    lp = -0.5 * (b / sd) ** 2 + loglik(b)
    return lp - lp.max(axis=0)


def draw_offsets(rows: CellRows, sd: float, rng: np.random.Generator, *, collapse: bool = False) -> np.ndarray:
    """(S,) one draw per posterior draw of the cell's offset given its rows, of the law's
    location or (``collapse``) of the collapse level's: a coarse grid over the prior's range
    and the residuals finds where the posterior lies (the peak of a smooth one lies within a
    bin of the grid's best point), a finer one over that region draws from it (the chosen bin,
    then uniformly within it). Where no row comes near its collapse level, the collapse
    level's offset is drawn from its prior."""
    s = np.arange(rows.loc.shape[1])
    if collapse:
        resid = rows.y[:, None] - rows.col_loc
        near = (np.abs(resid) < FAR * rows.col_sd + 2 * EDGE * sd).any(axis=1)
        if not near.any():
            return rng.normal(0.0, sd, len(s))
        rows, resid = rows.take(near), resid[near]

        def loglik(b):
            return collapse_log_likelihood(rows, b)
    else:
        resid = rows.y[:, None] - rows.loc

        def loglik(b):
            return log_likelihood(rows, b)

    lo = np.minimum(resid.min(axis=0), -EDGE * sd) - EDGE * sd
    hi = np.maximum(resid.max(axis=0), EDGE * sd) + EDGE * sd
    b, step = _grid(lo, hi, COARSE)
    keep = _log_posterior(loglik, b, sd) > np.log(TINY)
    first = np.argmax(keep, axis=0)
    last = COARSE - 1 - np.argmax(keep[::-1], axis=0)
    b, step = _grid(b[first, s] - step, b[last, s] + step, FINE)
    w = np.exp(_log_posterior(loglik, b, sd))
    cw = np.cumsum(w, axis=0)
    u = rng.random(len(s)) * cw[-1]
    pick = np.minimum((cw < u).sum(axis=0), FINE - 1)
    return b[pick, s] + step * (rng.random(len(s)) - 0.5)


def shifted_mean(mu: np.ndarray, offset: np.ndarray, log_shift: float) -> np.ndarray:
    """The law's mean degradation with the offset added to ln(mu + shift) (exactly ``mu``
    where the offset is 0: an unseen level)."""
    return mu + (mu + log_shift) * np.expm1(offset)

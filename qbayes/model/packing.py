"""The model's Gaussian parameters as one standard-normal vector, and the named parameters it makes.

Every parameter of the default model with a Normal prior (the law's scalar terms, the noise
terms, the collapse terms) and every grouping effect with a fixed sd is a linear map of
standard normals: a scalar is ``mu + sigma * u``, an effect ``sd * M @ u`` with ``M`` the
zero-sum basis of its levels (the orthonormal map PyMC's ZeroSumNormal uses) or the nested
projection of a grouping within a parent. Sampling them as one vector ``theta ~ N(0, I)``
gives NUTS the same geometry as one variable per parameter, with a much smaller graph: the
sampler compiles one prior term instead of thirty, and the cold fit's numba compile, which is
most of a first fit's time, shrinks with it (bench/bench_fit.py, docs/performance.md).

:func:`plan` lays the vector out for a spec and encoding; :meth:`Packing.build` makes the
named parameters inside the PyMC model (as ``pm.Deterministic``, so the model reads as
before), and :meth:`Packing.expand` makes the same variables from posterior draws of
``theta`` with NumPy, so the sampler never compiles them. A block's ``offset`` and ``scale``
are numbers or the names of other parameters (a learned sd, the token population's mean and
sd), which the fit samples as variables of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from qbayes.model import collapse
from qbayes.model.encoding import Encoding
from qbayes.model.mean import SCALAR_TERMS
from qbayes.model.spec import EFFECT_KINDS, ModelSpec

THETA = "theta"  # the packed standard-normal vector's variable name
SCALARS = (*SCALAR_TERMS, "act_intercept", "act_rate")  # the law's scalar parameters (Normal priors)


def zero_sum_basis(k: int) -> np.ndarray:
    """(k, k - 1) orthonormal columns spanning the vectors that sum to zero: the map from
    k - 1 free coordinates to k levels of PyMC's ZeroSumNormal transform."""
    eye = np.eye(k - 1)
    total = eye.sum(axis=0, keepdims=True)
    norm = total / (np.sqrt(k) + k)
    fill = norm - total / np.sqrt(k)
    return np.concatenate([eye, fill], axis=0) - norm


@dataclass(frozen=True)
class Block:
    """``name = offset + scale * (M @ theta[start:start + size])``: a scalar when ``dims`` is
    None (``M`` is 1 x 1), else a vector over the levels of coordinate ``dims``; ``z_name``
    also keeps ``M @ theta[...]`` itself (an effect's standardised values)."""

    name: str
    start: int
    size: int
    matrix: np.ndarray
    dims: str | None = None
    offset: float | str = 0.0
    scale: float | str = 1.0
    z_name: str | None = None
    const: tuple[tuple[str, float], ...] = ()  # constant companions (an effect's fixed sd)

    @property
    def linear(self) -> bool:
        """Whether the block is a linear map of theta alone (numeric offset and scale)."""
        return isinstance(self.offset, float) and isinstance(self.scale, float)


@dataclass
class Packing:
    """The layout of ``theta``: blocks in order (a block's offset or scale may name an
    earlier block)."""

    blocks: list[Block]

    @property
    def size(self) -> int:
        return sum(b.size for b in self.blocks)

    def add(
        self,
        name: str,
        matrix: np.ndarray,
        *,
        dims: str | None = None,
        offset: float | str = 0.0,
        scale: float | str = 1.0,
        z_name: str | None = None,
        const: tuple[tuple[str, float], ...] = (),
    ) -> None:
        self.blocks.append(Block(name, self.size, matrix.shape[1], matrix, dims, offset, scale, z_name, const))

    def add_scalar(self, name: str, mu: float, sigma: float) -> None:
        self.add(name, np.ones((1, 1)), offset=float(mu), scale=float(sigma))

    def linear(self, entries: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray]:
        """(c, S) such that the named parameters of ``entries`` ((name, length) pairs, as
        mean.layout lists them), concatenated, are ``c + S @ theta``; an entry one longer than
        its block (an effect's new-level slot) gets a zero row there. Every entry must be a
        block with a numeric offset and scale."""
        by_name = {b.name: b for b in self.blocks}
        c = np.zeros(sum(n for _, n in entries))
        s = np.zeros((c.size, self.size))
        row = 0
        for name, n in entries:
            b = by_name[name]
            if not b.linear:
                raise ValueError(f"{name} is not linear in theta")
            k = b.matrix.shape[0]
            c[row : row + k] = b.offset
            s[row : row + k, b.start : b.start + b.size] = b.scale * b.matrix
            row += n
        return c, s

    def values(self, theta):
        """The named parameters of every block linear in theta, concatenated in block order,
        as PyTensor ``c + S @ theta`` (:func:`sparse_product`)."""
        numeric = [b for b in self.blocks if b.linear]
        return sparse_product(*self.linear([(b.name, b.matrix.shape[0]) for b in numeric]), theta)

    def rows(self, entries: list[tuple[str, int]]) -> np.ndarray:
        """For each row of ``entries`` ((name, length) pairs, as :meth:`linear` takes them),
        its row in :meth:`values`; -1 for an effect's new-level slot (0 in the fit)."""
        span, row = {}, 0  # a linear block's first row in values() and its length
        for b in self.blocks:
            if b.linear:
                span[b.name] = (row, b.matrix.shape[0])
                row += b.matrix.shape[0]
        out = []
        for name, n in entries:
            first, k = span[name]
            out.extend([*range(first, first + k), *[-1] * (n - k)])
        return np.asarray(out, dtype=np.int64)

    def covers(self, names: list[str]) -> bool:
        """Whether every one of ``names`` is a block linear in theta."""
        linear = {b.name for b in self.blocks if b.linear}
        return all(n in linear for n in names)

    def build(self, theta, named: dict) -> dict:
        """The named parameters from PyTensor ``theta``: those with numeric offsets and scales
        as slices of one product ``c + S @ theta``, the others from them and ``named``; each is
        registered as a deterministic of the model in context (which the sampler does not
        compute: :meth:`expand` makes them from the draws)."""
        import pymc as pm
        import pytensor.tensor as pt

        numeric = [b for b in self.blocks if b.linear]
        values = self.values(theta)
        out: dict = {}
        row = 0
        for b in numeric:
            k = b.matrix.shape[0]
            out[b.name] = values[row] if b.dims is None else values[row : row + k]
            row += k
        for b in self.blocks:
            if not b.linear:
                lookup = {**named, **out}
                offset = b.offset if isinstance(b.offset, float) else lookup[b.offset]
                scale = b.scale if isinstance(b.scale, float) else lookup[b.scale]
                z = pt.dot(b.matrix, theta[b.start : b.start + b.size])
                out[b.name] = offset + scale * z
        for b in self.blocks:
            if b.z_name is not None:
                pm.Deterministic(b.z_name, pt.dot(b.matrix, theta[b.start : b.start + b.size]), dims=b.dims)
            for cname, cval in b.const:
                pm.Deterministic(cname, pt.constant(cval))
            out[b.name] = pm.Deterministic(b.name, out[b.name], dims=b.dims)
        return out

    def solve(self, named: dict[str, np.ndarray]) -> np.ndarray:
        """A ``theta`` that :meth:`build` maps to the ``named`` values (one value per block,
        and the values of any parameter a block's offset or scale names): the inverse of the
        map, least squares within a block whose matrix has a null space (a level alone in its
        parent, whose effect is 0 whatever theta holds there). Simulations that fix the
        parameters at known values (tests/model/recovery_support.py) set theta so."""
        theta = np.zeros(self.size)
        for b in self.blocks:
            off = b.offset if isinstance(b.offset, float) else np.asarray(named[b.offset], dtype=np.float64)
            sc = b.scale if isinstance(b.scale, float) else np.asarray(named[b.scale], dtype=np.float64)
            z = np.atleast_1d((np.asarray(named[b.name], dtype=np.float64) - off) / sc)
            theta[b.start : b.start + b.size] = np.linalg.lstsq(b.matrix, z, rcond=None)[0]
        return theta

    def expand(self, posterior: xr.Dataset, coords: Callable[[str], list]) -> xr.Dataset:
        """``posterior`` with every block's variables computed from its ``theta`` draws and
        ``theta`` itself dropped; ``coords(dims)`` gives a vector block's level names."""
        theta = posterior[THETA].values  # (chain, draw, P)
        chain_draw = ("chain", "draw")
        new: dict[str, xr.DataArray] = {}

        def value(v):
            return v if isinstance(v, float) else (new[v] if v in new else posterior[v]).values

        for b in self.blocks:
            raw = theta[..., b.start : b.start + b.size]
            z = raw @ b.matrix.T
            if b.dims is None:
                z = z[..., 0]
                dims, crd = chain_draw, {}
            else:
                dims, crd = (*chain_draw, b.dims), {b.dims: coords(b.dims)}

            def array(x, dims=dims, crd=crd):
                return xr.DataArray(x, dims=dims, coords=crd)

            if b.z_name is not None:
                new[b.z_name] = array(z)
            for cname, c in b.const:
                new[cname] = xr.DataArray(np.full(theta.shape[:2], c), dims=chain_draw)
            off, sc = value(b.offset), value(b.scale)
            if b.dims is not None:
                off, sc = _per_draw(off), _per_draw(sc)
            new[b.name] = array(off + sc * z)
        return posterior.drop_vars(THETA).assign(new)


def sparse_product(c: np.ndarray, s: np.ndarray, v):
    """PyTensor ``c + s @ v`` for a constant ``s`` that is mostly zeros (the blocks' matrices on
    its diagonal): ``v`` gathered at the nonzero columns, weighted and summed into their rows.
    For the default model that is 7,098 entries where the dense product read 74,480, twice per
    gradient (forward and transposed); the graph it compiles is smaller too (docs/performance.md)."""
    import pytensor.tensor as pt

    rows, cols = np.nonzero(s)
    return pt.inc_subtensor(pt.as_tensor_variable(c)[rows], s[rows, cols] * v[cols])


def nested_projection(parents: tuple[str, ...]) -> np.ndarray:
    """(K, K) matrix P such that P @ z, for z ~ N(0, I), has unit-variance entries summing to
    zero within each parent; a level alone in its parent gets 0 (its parent's effect is
    all the data can see of it)."""
    parents = np.asarray(parents)
    out = np.zeros((len(parents), len(parents)))
    for parent in np.unique(parents):
        members = np.flatnonzero(parents == parent)
        k = len(members)
        if k > 1:
            block = (np.eye(k) - 1.0 / k) * np.sqrt(k / (k - 1))
            out[np.ix_(members, members)] = block
    return out


def plan(spec: ModelSpec, enc: Encoding) -> Packing:
    """The layout of ``theta`` for ``spec`` on ``enc``'s levels, in the order the parameters
    are declared: the law's scalar terms and features, the non-centred grouping effects (a
    centred one, ``ZeroSumNormal(sd)``, is sampled as itself), the token population's mean and
    the latent ln D of models without a token count, the noise terms, the collapse terms."""
    pr = spec.priors
    pack = Packing([])
    for name in SCALARS:
        prior = getattr(pr, name)
        pack.add_scalar(name, prior.mu, prior.sigma)
    for f in enc.feature_names:
        pack.add_scalar(f"feat_{f}", pr.feature.mu, pr.feature.sigma)
    for g, e in spec.effects.items():
        for kind in e.kinds:
            if EFFECT_KINDS[kind] in e.centred:
                continue
            name, fixed = f"{kind}_{g}", e.fixed_sd.get(EFFECT_KINDS[kind])
            parents = enc.parents.get(g)
            k = len(enc.levels[g])
            matrix = nested_projection(parents) if parents is not None else zero_sum_basis(k)
            scale, const = (float(fixed), ((f"sd_{name}", float(fixed)),)) if fixed is not None else (f"sd_{name}", ())
            pack.add(name, matrix, dims=g, scale=scale, z_name=f"z_{name}", const=const)
    pack.add_scalar("log_tokens_mean", pr.log_tokens_mean.mu, pr.log_tokens_mean.sigma)
    if enc.tokens_missing:
        k = len(enc.tokens_missing)
        pack.add(
            "log_tokens_missing",
            np.eye(k),
            dims="tokens_missing",
            offset="log_tokens_mean",
            scale="log_tokens_sd",
            z_name="z_log_tokens",
        )
    for t in spec.noise:
        pack.add_scalar(f"noise_{t}", pr.noise_term.mu, pr.noise_term.sigma)
    c = spec.collapse
    if c is not None:
        pack.add_scalar("collapse_log_kappa", c.log_kappa.mu, c.log_kappa.sigma)
        pack.add_scalar("collapse_a", c.p_intercept.mu, c.p_intercept.sigma)
        pack.add_scalar("collapse_b", c.p_slope.mu, c.p_slope.sigma)
        per_level = [(f"collapse_{g}", g, sd) for g, sd in c.by.items()]
        per_level += [(collapse.kappa_name(g), g, sd) for g, sd in c.kappa_by.items()]
        for name, g, sd in per_level:
            matrix, sd = zero_sum_basis(len(enc.levels[g])), float(sd)
            pack.add(name, matrix, dims=g, scale=sd, z_name=f"z_{name}", const=((f"sd_{name}", sd),))
    return pack


def _identity(m: np.ndarray) -> bool:
    return m.shape[0] == m.shape[1] and np.array_equal(m, np.eye(m.shape[0]))


def _per_draw(v):
    """A (chain, draw) array broadcast against a trailing level axis; numbers as they are."""
    return v[..., None] if isinstance(v, np.ndarray) else v

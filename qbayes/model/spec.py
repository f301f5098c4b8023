"""Model specifications: what a model is, kept apart from the code that builds it.

A spec is a TOML file under ``models/`` parsed into frozen dataclasses; unknown keys are
errors with a close-match suggestion, so a typo never silently falls back to a default.
The spec's hash (of its canonical JSON) is stored with every fit and checked on load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from qbayes.errors import QBayesError, suggest, unknown
from qbayes.model.features import check_names
from qbayes.resources import spec_dir

SPEC_DIR = spec_dir()

GROUPINGS = (
    "family",
    "arch",
    "method",
    "w_kind",
    "eval_set",
    "source",
    "family_method",
    "arch_method",
    "format",
    "model",
    "cell",
    "setting",
    "model_cell",
)
# groupings read from several columns per row at some cost (a cell's label joins five):
# encoded only for a spec that uses them (ModelSpec.groupings), so predicting from any other
# fit does not compute them
DERIVED_GROUPINGS = ("cell", "setting", "model_cell")
# the groupings a spec's [cut] may offset (model/cells.py), outer first: each is conditioned
# given the offsets of the ones before it
CUT_GROUPINGS = ("cell", "model_cell")
# groupings a row may lack on purpose: a row without a named format (int4-g128 is read from
# its bits and group size alone) has no effect of it, where a row of no known family is a
# new level drawn from the population; a fit whose rows have no level of it has none
OPTIONAL_GROUPINGS = ("format",)
# groupings whose levels are combinations of other columns' values (a level is "a|b")
INTERACTIONS = {"family_method": ("family", "method"), "arch_method": ("arch", "method")}
# the parts of a grouping effect: parameter prefix -> the Effect field that switches it on,
# and the Priors field holding the half-normal prior of its sd
EFFECT_KINDS = {
    "a": "intercept",
    "b": "bits_slope",
    "c": "per_channel",
    "n": "size_slope",
    "q": "curvature",
    "r": "act_slope",
    "u": "act_intercept",
    "s": "noise_scale",
}
SD_PRIOR = {
    "a": "group_sd",
    "b": "slope_sd",
    "c": "per_channel_sd",
    "n": "size_slope_sd",
    "q": "curvature_sd",
    "r": "act_slope_sd",
    "u": "act_intercept_sd",
    "s": "noise_scale_sd",
}
# kinds that act on the activation term's exponent (mean.saturate) rather than on the law's
# linear predictor: ln of what quantized activations add, shifted per level
ACT_KINDS = ("u",)
# kinds that act on the log of the likelihood's scale (mean.relative_noise): where a level's
# rows scatter more or less around the law than the noise terms say
NOISE_KINDS = ("s",)
EFFECT_PREFIXES = tuple(f"{k}_" for k in EFFECT_KINDS)  # a_family, b_method, ...: effect vectors
LIKELIHOODS = ("log_student_t", "student_t")
# where the bits curvature acts: "quadratic" everywhere, (bits - 4)^2; "low_bits" only below
# 4 bits, min(bits - 4, 0)^2, so that 8 bits cannot be predicted worse than 6
CURVATURES = ("quadratic", "low_bits")
# what the scale of the log-scale noise may grow with (mean.relative_noise): "low_bits", per
# bit below 4; "per_channel", rows without groups. Each term's coefficient is a parameter
# noise_<term> on the log of the scale
NOISE_TERMS = ("low_bits", "per_channel")
TOKEN_LEVELS = ("family", "model")
TOKENS_WITHIN = ("arch",)  # groupings of families that ln D can be centred within
ROWS = ("all", "published", "collected")  # published: source_kind paper/repository; collected: collector
LOG_SHIFT = 0.01  # nats: default of ModelSpec.log_shift (published perplexities are rounded to 0.01)


@dataclass(frozen=True)
class Normal:
    mu: float
    sigma: float


@dataclass(frozen=True)
class HalfNormal:
    sigma: float


@dataclass(frozen=True)
class Effect:
    """A grouping's partially pooled effects: an intercept, and optionally a bits slope
    and a per-channel shift (how much worse one scale per channel is than groups)."""

    intercept: bool = True
    bits_slope: bool = False
    per_channel: bool = False
    size_slope: bool = False  # a departure from gamma_n: how fast delta falls with ln N
    # a departure from bits_curvature below 4 bits, min(bits - 4, 0)^2: how sharply this
    # level's degradation accelerates into collapse (AWQ on LLaMA holds at 3 bits and
    # collapses at 2, which one bits slope cannot say)
    curvature: bool = False
    # a change of ln delta per activation bit below 8, max(8 - act_bits, 0) on rows with
    # quantized activations: how much worse this level does at W4A4 than at W8A8 (Qwen3's
    # activation outliers make SmoothQuant W4A4 collapse where LLaMA's only degrade)
    act_slope: bool = False
    # a shift of the activation term's log, act_intercept + u_level - act_rate * (act_bits - 4),
    # on rows with quantized activations: SmoothQuant and OmniQuant exist to tame activation
    # outliers, and a family's outliers (Qwen3's) make its W4A4 rows worse than another's
    act_intercept: bool = False
    # a shift of the log of the noise scale on this level's rows: OPT's per-channel rows and
    # Qwen3's near-lossless ones scatter around the law far more than LLaMA's
    noise_scale: bool = False
    # which of these are centred, a = ZeroSumNormal(sd), rather than non-centred,
    # a = sd * ZeroSumNormal(1): centred suits effects the data pin down level by level
    centred: tuple[str, ...] = ()
    # a grouping these levels are nested in (families in block designs): the effects sum
    # to zero within each of its levels, and a level alone in its parent has none (the
    # parent's effect is all the data can see), which removes a ridge per such pair
    within: str = ""
    # parts whose sd is fixed (part name -> sd) rather than learned: no sd-z funnel for
    # NUTS to follow, and a new level's spread is what the spec says (models/law.toml)
    fixed_sd: dict[str, float] = field(default_factory=dict)
    # levels with fewer training rows than this get no effect of their own: their rows read
    # the grouping as a level the fit has not seen (a fresh draw from the population), so a
    # cell of one or two rows adds no coordinate its rows can barely inform; 0: every level
    min_rows: int = 0
    # likewise for levels seen in fewer families than this: a method's setting seen in one
    # family is that family's cell, not something a new family inherits; 0: every level
    min_families: int = 0

    @property
    def kinds(self) -> tuple[str, ...]:
        """Prefixes of the parts switched on ("a", "b", "c", "n", "q", "r", "u", "s"), in parameter order."""
        return tuple(k for k, f in EFFECT_KINDS.items() if getattr(self, f))


@dataclass(frozen=True)
class Priors:
    """Priors on the log-degradation scale; covariates are centred (see table.py)."""

    intercept: Normal = Normal(-2.5, 1.5)  # log delta at 4 bits, 7B params, 1T tokens
    bits_rate: Normal = Normal(1.4, 0.5)  # 1/gamma; ln 4 if noise power falls 4x per bit
    bits_curvature: Normal = Normal(0.0, 0.3)  # acceleration into collapse at low bits
    gamma_n: Normal = Normal(0.3, 0.3)  # N exponent (arXiv 2411.04330: 0.34)
    gamma_d: Normal = Normal(0.5, 0.15)  # D exponent: informative, see models/hierarchical.toml
    per_channel: Normal = Normal(1.0, 1.0)  # per-channel vs group-128, at 4 bits
    per_channel_bits: Normal = Normal(0.5, 0.5)  # per-channel penalty growth per bit removed
    log2_group: Normal = Normal(0.3, 0.3)  # per doubling of the group size
    act_intercept: Normal = Normal(-1.0, 2.0)  # log activation-quantization degradation at A4
    act_rate: Normal = Normal(1.0, 0.5)  # its decrease per activation bit
    feature: Normal = Normal(0.0, 1.0)  # per standardised feature covariate (see covariates.py)
    group_sd: HalfNormal = HalfNormal(0.7)  # sd of grouping intercepts
    slope_sd: HalfNormal = HalfNormal(0.3)  # sd of grouping bits slopes
    per_channel_sd: HalfNormal = HalfNormal(0.7)  # sd of grouping per-channel shifts
    size_slope_sd: HalfNormal = HalfNormal(0.2)  # sd of grouping departures from gamma_n
    curvature_sd: HalfNormal = HalfNormal(0.3)  # sd of grouping departures from the low-bit curvature
    act_slope_sd: HalfNormal = HalfNormal(0.3)  # sd of grouping slopes per activation bit below 8
    act_intercept_sd: HalfNormal = HalfNormal(0.5)  # sd of grouping shifts of the activation term's log
    noise_scale_sd: HalfNormal = HalfNormal(0.5)  # sd of grouping shifts of the log noise scale
    log_tokens_mean: Normal = Normal(0.0, 1.0)  # population of log(D / 1T) for missing D
    log_tokens_sd: HalfNormal = HalfNormal(1.0)
    ceiling: Normal = Normal(8.0, 0.5)  # LogNormal(ln 8, 0.5): collapse level, nats
    noise_floor: HalfNormal = HalfNormal(0.02)  # absolute noise, nats (table rounding)
    noise_rel: HalfNormal = HalfNormal(0.5)  # noise proportional to the mean degradation
    noise_term: Normal = Normal(0.0, 0.5)  # each noise term: change of ln(noise scale) per unit
    nu: tuple[float, float] = (2.0, 0.1)  # Gamma(alpha, beta) on Student-t dof


@dataclass(frozen=True)
class Collapse:
    """The collapse regime (model.collapse): each row either follows the law or, with a
    probability whose logit is ``p_intercept + p_slope * ln(law mean + log_shift)`` (plus, per
    grouping in ``by``, a zero-sum intercept per level with that fixed sd), collapses to
    kappa * (ln V - ln ppl_fp16): kappa times what a uniform predictor over the model's V-token
    vocabulary loses against the unquantized model, with a log-normal scatter ``level_sd``;
    ``kappa_by`` shifts ln kappa per level of its groupings (zero-sum, fixed sd). The law's
    mean saturates at that same level instead of a learned ceiling, so the collapse level and
    a ceiling cannot trade places."""

    log_kappa: Normal = Normal(0.0, 0.3)  # ln kappa: a collapse near uniform over the vocabulary
    level_sd: HalfNormal = HalfNormal(0.3)  # sd of a collapsed row's ln(delta + shift) around its level
    p_intercept: Normal = Normal(-3.0, 1.5)  # logit P(collapse) where the law's mean is 1 nat
    p_slope: Normal = Normal(1.5, 1.0)  # its rise per unit of ln(law mean)
    by: dict[str, float] = field(default_factory=dict)  # grouping -> fixed sd of its logit intercepts
    # grouping -> fixed sd of its levels' zero-sum deviations of ln kappa: a family's collapses
    # sit at its own multiple of the gap (LLaMA's near 1.2, Qwen3's near 1.45)
    kappa_by: dict[str, float] = field(default_factory=dict)


# Effect and Priors fields left out of a spec's canonical JSON at their defaults (to_json)
DEFAULT_MODEL = "hierarchical"  # the spec qbayes ships a posterior of (models/hierarchical.toml)
OMIT_AT_DEFAULT = {
    "effects": ("curvature", "act_slope", "act_intercept", "noise_scale", "min_rows", "min_families"),
    "priors": ("curvature_sd", "act_slope_sd", "act_intercept_sd", "noise_scale_sd"),
    "collapse": ("kappa_by",),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    effects: dict[str, Effect] = field(default_factory=dict)
    priors: Priors = Priors()
    likelihood: str = "log_student_t"
    # "family": each row sees the geometric mean of its family's known training tokens;
    # "model": each model's own. See models/hierarchical.toml for why family is the default.
    tokens: str = "family"
    # a grouping (e.g. "arch"): ln D enters as its departure from the mean over that level's
    # families, so gamma_d is learned within block designs only, and a design the fit has not
    # seen gets no D term (see models/hierarchical.toml). None: ln D as it is.
    tokens_within: str | None = None
    rows: str = "all"  # which database rows the model is for (see ROWS)
    features: tuple[str, ...] = ()  # measured covariates, names from qbayes.model.features
    log_shift: float = LOG_SHIFT  # nats: the likelihood models ln(delta + log_shift)
    curvature: str = "quadratic"  # see CURVATURES
    noise: tuple[str, ...] = ()  # terms the log-scale noise grows with, from NOISE_TERMS
    collapse: Collapse | None = None  # a mixture with a collapse regime (see Collapse); None: the law alone
    # grouping (from CUT_GROUPINGS) -> sd of a seen level's offset on ln(delta + shift), conditioned
    # after the fit on that level's own training rows (the cut model of model/cells.py)
    cut: dict[str, float] = field(default_factory=dict)
    # [cut] collapse: sd of a seen cell's offset of its collapse level's ln(level + shift), conditioned
    # the same way (a [collapse] spec with a cell cut only); None: the level the fit says
    cut_collapse: float | None = None

    @property
    def within(self) -> dict[str, str]:
        """Nested grouping -> the grouping it is nested in."""
        return {g: e.within for g, e in self.effects.items() if e.within}

    @property
    def groupings(self) -> tuple[str, ...]:
        """The groupings a fit of this spec encodes: every grouping in GROUPINGS, except the
        derived ones (DERIVED_GROUPINGS) that none of its effects, nestings or collapse terms use."""
        used = set(self.effects) | set(self.within.values())
        if self.collapse is not None:
            used |= set(self.collapse.by) | set(self.collapse.kappa_by)
        used |= set(self.cut)
        return tuple(g for g in GROUPINGS if g not in DERIVED_GROUPINGS or g in used)

    @property
    def min_rows(self) -> dict[str, int]:
        """Grouping -> the training rows a level needs for an effect of its own (where set)."""
        return {g: e.min_rows for g, e in self.effects.items() if e.min_rows}

    @property
    def min_families(self) -> dict[str, int]:
        """Grouping -> the families a level must be seen in for an effect of its own (where set)."""
        return {g: e.min_families for g, e in self.effects.items() if e.min_families}

    def to_json(self) -> str:
        """Canonical JSON (hashed). Optional parts listed in :data:`OMIT_AT_DEFAULT` are left
        out where unused, so a spec that does not use them keeps the hash of fits made
        before they existed."""
        raw = dataclasses.asdict(self)
        if raw["cut_collapse"] is not None:  # [cut] collapse, as the spec file writes it
            raw["cut"]["collapse"] = raw["cut_collapse"]
        del raw["cut_collapse"]
        if not raw["cut"]:
            del raw["cut"]
        if raw["collapse"] is None:
            del raw["collapse"]
        else:
            for name in OMIT_AT_DEFAULT["collapse"]:
                if not raw["collapse"][name]:
                    del raw["collapse"][name]
        for e in raw["effects"].values():
            for name in OMIT_AT_DEFAULT["effects"]:
                if name in e and e[name] == getattr(Effect(), name):
                    del e[name]
        for name in OMIT_AT_DEFAULT["priors"]:
            if raw["priors"][name] == dataclasses.asdict(Priors())[name]:
                del raw["priors"][name]
        return json.dumps(raw, sort_keys=True)

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        return _build(json.loads(text), "<fit file>")


def _check_keys(given: dict, allowed, where: str) -> None:
    for k in given:
        if k not in allowed:
            raise QBayesError(f"{where}: unknown key '{k}'{suggest(k, allowed)}; allowed: {', '.join(allowed)}")


def _prior(value, kind: type, where: str):
    names = [f.name for f in dataclasses.fields(kind)]
    if isinstance(value, dict):
        _check_keys(value, names, where)
        return kind(**{k: float(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)) and len(value) == len(names):
        return kind(*map(float, value))
    raise QBayesError(f"{where}: expected {{{', '.join(names)}}}, got {value!r}")


def _build(raw: dict, where: str) -> ModelSpec:
    _check_keys(raw, [f.name for f in dataclasses.fields(ModelSpec) if f.name != "cut_collapse"], where)
    effects = {}
    for g, e in raw.get("effects", {}).items():
        if g not in GROUPINGS:
            raise unknown(f"grouping in {where}", g, GROUPINGS)
        _check_keys(e, [f.name for f in dataclasses.fields(Effect)], f"{where} effects.{g}")
        centred = e.get("centred", [])
        if not isinstance(centred, (list, tuple)):
            raise QBayesError(f"{where} effects.{g}: 'centred' must be a list of {', '.join(EFFECT_KINDS.values())}")
        fixed = e.get("fixed_sd", {})
        if not isinstance(fixed, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in fixed.values()
        ):
            raise QBayesError(
                f"{where} effects.{g}: 'fixed_sd' must map effect parts to positive numbers, e.g. {{ intercept = 0.5 }}"
            )
        for key in ("min_rows", "min_families"):
            value = e.get(key, 0)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise QBayesError(f"{where} effects.{g}: '{key}' must be a whole number, 0 or more")
        effects[g] = Effect(**{**e, "centred": tuple(centred), "fixed_sd": {k: float(v) for k, v in fixed.items()}})
        on = [EFFECT_KINDS[k] for k in effects[g].kinds]
        for kind in fixed:
            if kind not in on:
                raise unknown(f"fixed_sd part in {where} effects.{g}", str(kind), on)
        for kind in centred:
            if kind not in on:
                raise unknown(f"centred effect in {where} effects.{g}", str(kind), on)
    for g, e in effects.items():
        if not e.within:
            continue
        if e.within not in effects or e.within == g:
            raise QBayesError(
                f"{where} effects.{g}: 'within' must name another grouping of the model's effects "
                f"(got '{e.within}'{suggest(e.within, [x for x in effects if x != g])})"
            )
        if e.centred:
            raise QBayesError(f"{where} effects.{g}: nested effects ('within') are non-centred; drop 'centred'")
    prior_fields = {f.name: f for f in dataclasses.fields(Priors)}
    given = raw.get("priors", {})
    _check_keys(given, list(prior_fields), f"{where} [priors]")
    priors = {}
    defaults = Priors()
    for k, v in given.items():
        default = getattr(defaults, k)
        kind = type(default)
        priors[k] = tuple(map(float, v)) if kind is tuple else _prior(v, kind, f"{where} priors.{k}")
    likelihood = raw.get("likelihood", "log_student_t")
    if likelihood not in LIKELIHOODS:
        raise unknown(f"likelihood in {where}", likelihood, LIKELIHOODS)
    tokens = raw.get("tokens", "family")
    if tokens not in TOKEN_LEVELS:
        raise unknown(f"tokens level in {where}", tokens, TOKEN_LEVELS)
    tokens_within = raw.get("tokens_within")
    if tokens_within is not None and tokens_within not in TOKENS_WITHIN:
        raise unknown(f"tokens_within grouping in {where}", str(tokens_within), TOKENS_WITHIN)
    rows = raw.get("rows", "all")
    if rows not in ROWS:
        raise unknown(f"rows in {where}", rows, ROWS)
    features = raw.get("features", [])
    if not isinstance(features, (list, tuple)) or not all(isinstance(f, str) for f in features):
        raise QBayesError(f"{where}: 'features' must be a list of feature names")
    check_names(features, where)
    log_shift = raw.get("log_shift", LOG_SHIFT)
    if not isinstance(log_shift, (int, float)) or isinstance(log_shift, bool) or not 0 < log_shift <= 1:
        raise QBayesError(f"{where}: 'log_shift' must be a number in (0, 1] nats")
    curvature = raw.get("curvature", "quadratic")
    if curvature not in CURVATURES:
        raise unknown(f"curvature in {where}", curvature, CURVATURES)
    noise = raw.get("noise", [])
    if not isinstance(noise, (list, tuple)):
        raise QBayesError(f"{where}: 'noise' must be a list of terms from {', '.join(NOISE_TERMS)}")
    for term in noise:
        if term not in NOISE_TERMS:
            raise unknown(f"noise term in {where}", str(term), NOISE_TERMS)
    if noise and likelihood != "log_student_t":
        raise QBayesError(
            f"{where}: 'noise' terms scale the log_student_t likelihood; "
            f"likelihood '{likelihood}' has its own noise scale (mean.noise_scale)"
        )
    collapse = _collapse(raw.get("collapse"), likelihood, where)
    cut, cut_collapse = _cut(raw.get("cut", {}), likelihood, where)
    if cut_collapse is not None and (collapse is None or "cell" not in cut):
        raise QBayesError(
            f"{where}: [cut] collapse offsets the collapse level of seen cells: it needs [collapse] and a cell cut"
        )
    if "name" not in raw:
        raise QBayesError(f"{where}: missing 'name'")
    return ModelSpec(
        name=raw["name"],
        description=raw.get("description", ""),
        effects=effects,
        priors=Priors(**priors),
        likelihood=likelihood,
        tokens=tokens,
        rows=rows,
        tokens_within=tokens_within,
        features=tuple(features),
        log_shift=float(log_shift),
        curvature=curvature,
        noise=tuple(noise),
        collapse=collapse,
        cut=cut,
        cut_collapse=cut_collapse,
    )


def _cut(raw, likelihood: str, where: str) -> tuple[dict[str, float], float | None]:
    """The [cut] table, checked: grouping -> sd of its offsets, in CUT_GROUPINGS order, and the
    sd of a cell's collapse-level offset (key ``collapse``; None without)."""
    if not isinstance(raw, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in raw.values()
    ):
        raise QBayesError(f"{where}: [cut] must map groupings to positive sds, e.g. {{ cell = 0.5 }}")
    for g in raw:
        if g not in (*CUT_GROUPINGS, "collapse"):
            raise unknown(f"grouping in {where} [cut]", g, (*CUT_GROUPINGS, "collapse"))
    if raw and likelihood != "log_student_t":
        raise QBayesError(f"{where}: [cut] offsets the log_student_t likelihood only (got '{likelihood}')")
    collapse = float(raw["collapse"]) if "collapse" in raw else None
    return {g: float(raw[g]) for g in CUT_GROUPINGS if g in raw}, collapse


def _collapse(raw, likelihood: str, where: str) -> Collapse | None:
    """The [collapse] table, checked; None where the spec has none."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise QBayesError(f"{where}: [collapse] must be a table")
    names = [f.name for f in dataclasses.fields(Collapse)]
    _check_keys(raw, names, f"{where} [collapse]")
    if likelihood != "log_student_t":
        raise QBayesError(f"{where}: [collapse] mixes with the log_student_t likelihood only (got '{likelihood}')")
    tables = {}
    for name, example in (("by", "method = 1.0"), ("kappa_by", "family = 0.1")):
        by = raw.get(name, {})
        if not isinstance(by, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in by.values()
        ):
            raise QBayesError(f"{where} [collapse]: '{name}' must map groupings to positive sds, e.g. {{ {example} }}")
        for g in by:
            if g not in GROUPINGS:
                raise unknown(f"grouping in {where} [collapse].{name}", g, GROUPINGS)
        tables[name] = {g: float(v) for g, v in by.items()}
    defaults = Collapse()
    parts = {
        k: _prior(v, type(getattr(defaults, k)), f"{where} collapse.{k}") for k, v in raw.items() if k not in tables
    }
    return Collapse(**parts, **tables)


def available() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml"))


def load_spec(name_or_path: str) -> ModelSpec:
    """A spec by registry name (``models/NAME.toml``) or by path to a TOML file."""
    path = Path(name_or_path)
    if not path.suffix == ".toml":
        path = SPEC_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise unknown("model", name_or_path, available())
    if not path.exists():
        raise QBayesError(f"{path}: no such model spec")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise QBayesError(f"{path}: invalid TOML ({exc})") from exc
    return _build(raw, str(path))

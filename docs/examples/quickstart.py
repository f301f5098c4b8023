# %% [markdown]
# # qbayes quickstart
#
# Predict how much a model's perplexity grows under weight quantization, with intervals,
# from the posterior qbayes ships; condition on a measurement of your own; look at the
# fit with ArviZ. Perplexity is per token on the evaluation set (WikiText-2 here);
# the degradation Δ is in nats per token, ln(quantized / fp16 perplexity).

# %%
import matplotlib.pyplot as plt
import polars as pl

import qbayes

model = qbayes.load(n_draws=500, seed=0)  # the shipped posterior; qbayes.load("fit.nc") for your own
model

# %% [markdown]
# ## Predict a few formats for one model
#
# Queries are a polars (or pandas) DataFrame in the layout of `qbayes predict --input`:
# a format by name (`Q4_K_M`, `int4-g128`, `nf4`, ...) or `method` + `w_bits`, and the
# unquantized perplexity `fp16_ppl`.

# %%
formats = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0"]
queries = pl.DataFrame(
    {
        "family": "Qwen2.5",
        "model": "Qwen2.5-7B",
        "params_b": 7.6,
        "format": formats,
        "eval_set": "wikitext2",
        "fp16_ppl": 6.85,
    }
)
pred = model.predict(queries)
pred.select("format", "bits_per_weight", "ppl_q05", "ppl_q50", "ppl_q95", "delta_q50", "outside_bits")

# %% [markdown]
# ## Predictive intervals against memory
#
# Weight memory is parameters x bits per weight / 8. The bars are 90% predictive
# intervals of the perplexity you would measure.

# %%
mem_gb = pred["params_b"] * pred["bits_per_weight"] / 8
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.errorbar(
    mem_gb,
    pred["ppl_q50"],
    yerr=[pred["ppl_q50"] - pred["ppl_q05"], pred["ppl_q95"] - pred["ppl_q50"]],
    fmt="o",
    capsize=3,
)
for x, y, f in zip(mem_gb, pred["ppl_q50"], pred["format"]):
    ax.annotate(f, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
ax.axhline(6.85, color="grey", lw=0.8, ls="--", label="fp16")
ax.set(xlabel="weight memory, GB", ylabel="WikiText-2 perplexity", yscale="log", title="Qwen2.5-7B")
ax.legend()
plt.show()

# %% [markdown]
# ## Condition on one measured row
#
# You measured Q4_K_M yourself: give the row with its perplexity `ppl` as `observed`.
# The other formats move with it, and the `obs_*` columns say how much the update rests
# on (`obs_ess`: effective sample size of the reweighted draws).

# %%
measured = queries.filter(pl.col("format") == "Q4_K_M").with_columns(ppl=pl.lit(7.40))
cond = model.predict(queries, observed=measured)
print("\n".join(model.notes))
pl.DataFrame(
    {
        "format": formats,
        "ppl_q50 before": pred["ppl_q50"],
        "ppl_q50 after": cond["ppl_q50"],
        "obs_ess": cond["obs_ess"],
    }
)

# %% [markdown]
# ## Compare two formats
#
# Every command has its Python function (docs/api.md): `model.compare` is `qbayes compare`,
# the difference between two options' perplexity as you would measure each, draw by draw.

# %%
candidates = queries.head(1).select("family", "model", "params_b", "fp16_ppl")
c = model.compare(candidates, "Q4_K_M", "Q5_K_M", formats=["Q4_K_M", "Q5_K_M"])
print(
    f"{c.first} minus {c.second}: median {c.difference[0.5]:+.3f}, "
    f"90% [{c.difference[0.05]:+.3f}, {c.difference[0.95]:+.3f}]; "
    f"P(within {c.tolerance:g}% of each other) {c.p_within_tolerance:.2f}"
)

# %% [markdown]
# ## The shipped fit in ArviZ
#
# `model.fit.idata` is the posterior as an ArviZ DataTree: every `arviz_plots` and
# `arviz_stats` function reads it.

# %%
import arviz_plots as azp
from arviz_stats import summary

summary(model.fit.idata, var_names=["intercept", "bits_rate", "gamma_n"], kind="diagnostics")

# %%
pc = azp.plot_trace(
    model.fit.idata,
    var_names=["intercept", "bits_rate", "gamma_n"],
    backend="matplotlib",
    col_wrap=3,
    figure_kwargs={"figsize": (9, 2.2), "layout": "constrained"},
)
plt.show()

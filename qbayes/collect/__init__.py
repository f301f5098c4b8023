"""Collection: measure how quantization changes a causal LM's loss, with provenance.

``qbayes collect`` loads a Hugging Face model from a local directory and, for every
configuration of a grid (``collectors/NAME.toml``), writes rows in the database schema
(:mod:`qbayes.db.schema`) to a shard directory:

* :mod:`.grid`      the grid file, parsed into frozen dataclasses;
* :mod:`.formats`   number formats (int, fp8, nf4, MX) and their labels;
* :mod:`.rtn`       round-to-nearest quantize-dequantize of a weight matrix;
* :mod:`.texts`     the built-in texts (shipped, or read from installed packages);
* :mod:`.corpora`   WikiText-2, C4, PTB and local files, read through ``datasets``;
* :mod:`.protocol`  texts to token windows (the GPTQ protocol for the published sets);
* :mod:`.preflight` everything a run needs, checked before any model is loaded;
* :mod:`.modelio`   loading the model, its quantizable layers and parameter counts;
* :mod:`.evaluate`  NLL / perplexity, KL divergence from the unquantized model, decode speed;
* :mod:`.tasks_eval` downstream task accuracy through lm-evaluation-harness (``--tasks``);
* :mod:`.methods`   the registry of quantization methods (RTN, quanto, GPTQ, AWQ, ...);
* :mod:`.landscape` Hessian trace, top eigenvalue and radial loss;
* :mod:`.outliers`  activation and weight outlier statistics;
* :mod:`.sqnr`      signal-to-quantization-noise ratio per layer and overall;
* :mod:`.shard`     the shard being written: resume, force, atomic saves;
* :mod:`.plan`      what a run is asked to do: options, configurations, steps;
* :mod:`.runner`    the loop over configurations;
* :mod:`.manifest`  the models of a run (``--model`` / ``--models manifest.csv``);
* :mod:`.executors` where the work runs: ``local`` (in this process) or ``ray`` (tasks on
  a Ray cluster, each writing its own shard, merged by the driver).

Everything that imports torch lives in this package, ``qbayes.zoo`` training and
``qbayes.cli.collect``, so
``import qbayes`` and ``qbayes fit`` never need it.
"""

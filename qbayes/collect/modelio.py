"""Loading a causal LM from a local directory, and the layers quantization acts on.

The model must be a directory saved with ``save_pretrained`` (``config.json``, weights and
a tokenizer); nothing is fetched from a hub. The *quantizable layers* are the linear
projections inside the network: every ``torch.nn.Linear`` and transformers ``Conv1D``
(GPT-2) except the output head. Embeddings, norms and the head stay in float, for every
method, so methods are compared on the same weights.
"""

from __future__ import annotations

import copy
import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from qbayes.errors import QBayesError

TRAIN_INFO = "qbayes_train.json"  # training card written by `qbayes zoo train`
# files of which a saved tokenizer has at least one (fast, sentencepiece, BPE, WordPiece)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# what the models table records for architectures we know (position, norm, mlp)
ARCH_INFO = {
    "llama": ("rope", "rmsnorm", "gated-silu"),
    "mistral": ("rope", "rmsnorm", "gated-silu"),
    "qwen2": ("rope", "rmsnorm", "gated-silu"),
    "gpt2": ("learned", "layernorm", "gelu"),
    "opt": ("learned", "layernorm", "relu"),
    "gpt_neox": ("rope", "layernorm", "gelu"),
    "bloom": ("alibi", "layernorm", "gelu"),
    "falcon": ("rope", "layernorm", "gelu"),
}


@dataclass
class LayerRef:
    """A quantizable layer, with its weight seen as ``[out_features, in_features]``."""

    name: str
    module: torch.nn.Module
    transposed: bool  # Conv1D stores [in, out]

    def weight(self) -> torch.Tensor:
        w = self.module.weight.data
        return w.t() if self.transposed else w

    def set_weight(self, w_out_in: torch.Tensor) -> None:
        w = w_out_in.t() if self.transposed else w_out_in
        self.module.weight.data.copy_(w.to(self.module.weight.dtype))

    @property
    def shape(self) -> tuple[int, int]:
        out_f, in_f = self.weight().shape
        return int(out_f), int(in_f)


@dataclass
class LoadedModel:
    path: Path
    model: torch.nn.Module
    tokenizer: object
    model_type: str
    device: torch.device
    dtype: torch.dtype

    def layers(self, model: torch.nn.Module | None = None) -> list[LayerRef]:
        return quantizable_layers(model if model is not None else self.model)

    def fresh_copy(self) -> torch.nn.Module:
        """A deep copy of the unquantized model, for a method to modify: the one quantized
        copy a configuration holds beside the base model (freed when it ends, see
        :func:`release_memory`). A model spread over several devices is copied part by
        part onto the same devices."""
        return copy.deepcopy(self.model)


class LoadOutOfMemory(QBayesError):
    """The model does not fit where it was being loaded."""


def release_memory(device: torch.device) -> None:
    """Return what the last step freed: collect reference cycles (a quantized model's
    hooks and traced forwards form some) and hand CUDA's cached blocks back, so the
    next configuration starts from the base model alone."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_model_dir(path: str | os.PathLike) -> Path:
    """The model directory, or a QBayesError saying what is missing."""
    p = Path(path)
    if not p.exists():
        raise QBayesError(f"{p}: no such model directory")
    if not p.is_dir():
        raise QBayesError(f"{p}: not a directory (expected a model saved with save_pretrained)")
    if not (p / "config.json").is_file():
        raise QBayesError(f"{p}: no config.json - not a Hugging Face model directory")
    weights = list(p.glob("*.safetensors")) + list(p.glob("*.bin"))
    if not weights:
        raise QBayesError(f"{p}: no weights (*.safetensors or *.bin)")
    return p


def load_model(
    path: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32", spread: bool = False
) -> LoadedModel:
    """Load model and tokenizer from a local directory, in eval mode, on ``device``.

    On CUDA the weights are loaded straight onto the device (never a full host copy
    first); ``spread`` places the layers over every visible GPU (``device_map="auto"``)
    for a model larger than one. Running out of memory, host or device, raises
    :class:`LoadOutOfMemory` with what to change."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    p = check_model_dir(path)
    placement = {}
    if device == "cuda":
        placement = {"device_map": "auto" if spread else device}
    try:
        config = AutoConfig.from_pretrained(p, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            p, dtype=DTYPES[dtype], local_files_only=True, attn_implementation="sdpa", **placement
        )
        if not placement:
            model.to(torch.device(device))
    except (torch.OutOfMemoryError, MemoryError) as exc:
        release_memory(torch.device(device))
        raise LoadOutOfMemory(
            f"{p}: out of memory loading the model in {dtype} on {device} ({type(exc).__name__}: "
            f'{str(exc).strip()[:300]}): collect in bfloat16 ([eval] dtype = "bfloat16", as in the gpu '
            "grid), or on a device with more memory"
        ) from exc
    except Exception as exc:  # transformers raises many types for broken or foreign checkpoints
        raise QBayesError(f"{p}: cannot load the model ({type(exc).__name__}: {exc})") from exc
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise QBayesError(
            f"{p}: has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save one beside the "
            "weights with tokenizer.save_pretrained(DIR)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
    except Exception as exc:
        raise QBayesError(f"{p}: cannot load the tokenizer ({type(exc).__name__}: {exc})") from exc
    dev = torch.device(device)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return LoadedModel(p, model, tokenizer, config.model_type, dev, DTYPES[dtype])


def skeleton(path: str | os.PathLike) -> LoadedModel:
    """The model's layers without its weights (built from ``config.json`` on the meta
    device) and without a tokenizer: enough to check which methods and formats fit it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    p = check_model_dir(path)
    try:
        config = AutoConfig.from_pretrained(p, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as exc:  # transformers raises many types for broken or foreign configs
        raise QBayesError(f"{p}: cannot build the model from its config.json ({type(exc).__name__}: {exc})") from exc
    return LoadedModel(p, model, None, config.model_type, torch.device("meta"), DTYPES["float32"])


def quantizable_layers(model: torch.nn.Module) -> list[LayerRef]:
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    out = []
    for name, module in model.named_modules():
        if module is head:
            continue
        if isinstance(module, torch.nn.Linear):
            out.append(LayerRef(name, module, transposed=False))
        elif isinstance(module, Conv1D):
            out.append(LayerRef(name, module, transposed=True))
    return out


def param_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, parameters outside the input and output embeddings); tied
    weights are counted once."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    embed = set()
    for m in (model.get_input_embeddings(), model.get_output_embeddings()):
        if m is not None and id(m.weight) not in embed:
            embed.add(id(m.weight))
    # learned position embeddings count as embeddings too (GPT-2 wpe, OPT embed_positions)
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding) and id(m.weight) not in embed:
            embed.add(id(m.weight))
    n_embed = sum(p.numel() for p in model.parameters() if id(p) in embed)
    return total, total - n_embed


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of all parameters as stored (tied weights once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def read_train_info(path: str | Path) -> dict | None:
    """The training card of a model trained here (``qbayes_train.json``), if there is one.
    It gives what a saved model does not: training tokens, seed, recipe and content hash."""
    card = Path(path) / TRAIN_INFO
    if not card.is_file():
        return None
    try:
        info = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise QBayesError(f"{card}: unreadable training card ({exc})") from None
    if not isinstance(info, dict) or not isinstance(info.get("train_tokens"), int):
        raise QBayesError(f"{card}: training card without an integer 'train_tokens'")
    return info

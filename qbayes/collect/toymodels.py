"""Small causal LMs built from configs and trained for seconds on the shipped texts.

No weights can be downloaded here, so tests and benchmarks make their own: a byte-level
BPE tokenizer trained on the ``train`` part of a text, a Llama-, GPT-2- or OPT-shaped
model of a chosen width, and a fixed number of AdamW steps so that the weights are no longer
random (quantization then matters, and the Hessian is that of a trained model).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qbayes.collect import texts

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class ToySpec:
    arch: str  # llama, gpt2, opt
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 256
    vocab: int = 512
    max_positions: int = 512


def build_tokenizer(text: str, vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[EOS],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=EOS)


def build_model(spec: ToySpec) -> torch.nn.Module:
    import transformers as tf

    if spec.arch == "llama":
        config = tf.LlamaConfig(
            vocab_size=spec.vocab,
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=max(1, spec.heads // 2),
            max_position_embeddings=spec.max_positions,
            tie_word_embeddings=False,
        )
        return tf.LlamaForCausalLM(config)
    if spec.arch == "gpt2":
        config = tf.GPT2Config(
            vocab_size=spec.vocab,
            n_embd=spec.hidden,
            n_layer=spec.layers,
            n_head=spec.heads,
            n_inner=spec.intermediate,
            n_positions=spec.max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )
        return tf.GPT2LMHeadModel(config)
    if spec.arch == "opt":
        config = tf.OPTConfig(
            vocab_size=spec.vocab,
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            ffn_dim=spec.intermediate,
            max_position_embeddings=spec.max_positions,
            word_embed_proj_dim=spec.hidden,
            dropout=0.0,
            attention_dropout=0.0,
            pad_token_id=0,
            bos_token_id=0,
            eos_token_id=0,
        )
        return tf.OPTForCausalLM(config)
    raise ValueError(f"unknown toy architecture {spec.arch!r}")


def train(
    model: torch.nn.Module,
    ids: list[int],
    *,
    steps: int,
    seq_len: int = 128,
    batch: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
) -> float:
    """``steps`` of AdamW on random windows of ``ids`` (a fixed count, so the result does
    not depend on the machine's speed); returns the last training loss."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    loss = float("nan")
    for _ in range(steps):
        start = torch.randint(0, data.numel() - seq_len - 1, (batch,), generator=gen)
        x = torch.stack([data[s : s + seq_len] for s in start.tolist()])
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = out.loss.item()
    model.eval()
    return loss


def make_toy(
    path: str | Path,
    spec: ToySpec,
    *,
    text: str = "shakespeare",
    steps: int = 150,
    train_chars: int = 1_000_000,
    seed: int = 0,
) -> dict:
    """Build, train and save a toy model with its tokenizer; returns a small report."""
    torch.manual_seed(seed)
    corpus = texts.load_text(text, "train")[:train_chars]
    tokenizer = build_tokenizer(corpus, spec.vocab)
    ids = tokenizer(corpus, add_special_tokens=False)["input_ids"]
    model = build_model(spec)
    t0 = time.perf_counter()
    loss = train(model, ids, steps=steps, seed=seed)
    seconds = time.perf_counter() - t0
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    n_params = sum(p.numel() for p in model.parameters())
    return {"path": str(path), "params": n_params, "steps": steps, "loss": loss, "train_s": seconds}

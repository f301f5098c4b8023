"""The model zoo: small causal LMs trained here from scratch, with checkpoints at several
token budgets, so that collection can measure quantization against size *and* data.

``recipe`` parses ``collectors/zoo.toml``; ``corpus`` trains the shared tokenizer and
tokenizes the training text; ``train`` runs one (architecture, size) and saves its
checkpoints. Needs the ``collect`` extra (torch, transformers).
"""

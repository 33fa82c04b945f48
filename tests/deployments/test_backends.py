"""Backends in-process on real models: the packaged MiniLM, and tiny local models for the GPU-profile paths."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.backends.registry import EMBEDDING_BACKENDS, RERANK_BACKENDS, TRANSLATION_BACKENDS
from deployments.common import select_device
from deployments.spec import BackendSpec

TEXTS = ["The mitochondria is the powerhouse of the cell.", "Paris is the capital of France.", "hi"]


def make(registry, backend, model, **options):
    return registry[backend](BackendSpec(backend=backend, model=str(model), options=options), select_device("cpu"))


@pytest.fixture(scope="module")
def minilm_backend(minilm_path):
    return make(EMBEDDING_BACKENDS, "sentence-transformers", minilm_path)


def test_sentence_transformers_matches_the_model_and_is_normalised(minilm_backend, minilm_path):
    from sentence_transformers import SentenceTransformer

    vectors = minilm_backend.encode(TEXTS)
    reference = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(vectors * reference, axis=1)) > 0.9999


def test_token_counts_are_truncated_at_the_model_limit(minilm_backend):
    counts = minilm_backend.count_tokens(["word " * 1000, "hi"])
    assert counts[0] == minilm_backend.max_seq_length == 256
    assert counts[1] == 3  # [CLS] hi [SEP]


def test_flag_embedding_base_with_mean_pooling_matches_sentence_transformers(minilm_backend, minilm_path):
    flag = make(EMBEDDING_BACKENDS, "flag-embedding", minilm_path, model_class="base", pooling_method="mean",
                max_length=256)
    cosine = np.sum(flag.encode(TEXTS) * minilm_backend.encode(TEXTS), axis=1)
    assert np.min(cosine) > 0.999


def test_flag_embedding_m3_matches_flagembeddings_own_encode(tiny_models):
    from FlagEmbedding import BGEM3FlagModel

    backend = make(EMBEDDING_BACKENDS, "flag-embedding", tiny_models["encoder"], model_class="m3")
    reference = BGEM3FlagModel(str(tiny_models["encoder"]), use_fp16=False, devices="cpu").encode(TEXTS)
    cosine = np.sum(backend.encode(TEXTS) * reference["dense_vecs"], axis=1)
    assert np.min(cosine) > 0.999


def test_flag_reranker_matches_compute_score(tiny_models):
    from FlagEmbedding import FlagReranker

    pairs = [("what is a cell", TEXTS[0]), ("what is a cell", TEXTS[1])]
    backend = make(RERANK_BACKENDS, "flag-reranker", tiny_models["cross_encoder"])
    reference = FlagReranker(str(tiny_models["cross_encoder"]), use_fp16=False, devices="cpu").compute_score(
        pairs, normalize=True
    )
    np.testing.assert_allclose(backend.score(pairs), reference, atol=1e-5)


def test_cross_encoder_agrees_with_flag_reranker_on_the_same_model(tiny_models):
    pairs = [("what is a cell", TEXTS[0]), ("capital", TEXTS[1]), ("q", TEXTS[2])]
    cross = make(RERANK_BACKENDS, "cross-encoder", tiny_models["cross_encoder"])
    flag = make(RERANK_BACKENDS, "flag-reranker", tiny_models["cross_encoder"])
    scores = cross.score(pairs)
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(scores, flag.score(pairs), atol=1e-5)


def test_bi_encoder_rerank_puts_the_relevant_passage_first(minilm_path):
    backend = make(RERANK_BACKENDS, "bi-encoder", minilm_path)
    query = "Which organelle produces energy for the cell?"
    scores = backend.score([(query, TEXTS[1]), (query, TEXTS[0]), (query, "Bananas are yellow.")])
    assert int(np.argmax(scores)) == 1
    assert np.all((scores >= 0) & (scores <= 1))


def test_translation_splits_long_text_into_sentences_that_fit_the_model(tiny_models):
    translator = make(TRANSLATION_BACKENDS, "ctranslate2", tiny_models["marian-en-fr"], max_length=24)
    run_on = " ".join(f"word{i}" for i in range(120))  # one sentence, far over 24 tokens
    text = f"First sentence here. Second one? Third!\n\n{run_on}.\n  \nLast paragraph."
    paragraphs = translator.split(text)
    assert paragraphs[0] == ["First sentence here.", "Second one?", "Third!"]
    assert paragraphs[2] == ["Last paragraph."]
    assert len(paragraphs) == 3 and len(paragraphs[1]) > 1
    assert all(len(translator.tokenizer.encode(piece)) <= 24 for paragraph in paragraphs for piece in paragraph)
    assert " ".join(paragraphs[1]) == run_on + "."  # every word kept, in order


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_flag_backends_run_in_the_devices_half_precision(tiny_models, dtype):
    """A GPU replica's dtype reaches the weights (FlagEmbedding casts only inside the `encode` we bypass); the
    half-precision answers stay those of fp32. Run on CPU, where torch has both half types."""
    import torch

    from deployments.common import DeviceInfo

    half = DeviceInfo(requested="cuda", kind="cpu", torch_device="cpu", dtype=dtype)
    pairs = [("what is a cell", TEXTS[0]), ("capital", TEXTS[1]), ("q", TEXTS[2])]
    spec = BackendSpec(backend="flag-reranker", model=str(tiny_models["cross_encoder"]))
    reranker = RERANK_BACKENDS["flag-reranker"](spec, half)
    assert {p.dtype for p in reranker._model.parameters()} == {getattr(torch, dtype)}
    reference = make(RERANK_BACKENDS, "flag-reranker", tiny_models["cross_encoder"]).score(pairs)
    np.testing.assert_allclose(reranker.score(pairs), reference, atol=0.02)

    spec = BackendSpec(backend="flag-embedding", model=str(tiny_models["encoder"]), options={"model_class": "m3"})
    embedder = EMBEDDING_BACKENDS["flag-embedding"](spec, half)
    assert {p.dtype for p in embedder._model.parameters()} == {getattr(torch, dtype)}
    vectors = embedder.encode(TEXTS)
    assert vectors.dtype == np.float32
    reference = make(EMBEDDING_BACKENDS, "flag-embedding", tiny_models["encoder"], model_class="m3").encode(TEXTS)
    assert np.min(np.sum(vectors * reference, axis=1)) > 0.99


@pytest.mark.parametrize(("backend", "options", "min_cosine", "atol"), [
    ("onnx", {}, 0.9999, 1e-5),
    ("openvino", {"inference_precision": "f32"}, 0.9999, 1e-5),
    ("openvino", {}, 0.999, 2e-3),  # OpenVINO's default: bfloat16 where the CPU computes in it, else f32
])
def test_exported_encoder_equals_sentence_transformers_on_the_packaged_model(
        minilm_backend, prepared_models, backend, options, min_cosine, atol):
    """The exported-graph backends (the cpu profile's first choices) give the reference's vectors, token counts
    and window; a text past the window is cut where sentence-transformers cuts it."""
    from deployments.prepare import prepare

    prepare(["minilm-embedder"], prepared_models)  # `make models` has built it; idempotent
    encoder = make(EMBEDDING_BACKENDS, backend, prepared_models / "minilm-embedder" / "onnx", **options)
    if "inference_precision" in options:
        assert encoder.precision == options["inference_precision"]
    texts = [*TEXTS, "photosynthesis " * 400, "ünïcødé ✓ 数学"]
    assert (encoder.dimensions, encoder.max_seq_length) == (minilm_backend.dimensions, minilm_backend.max_seq_length)
    assert encoder.count_tokens(texts) == minilm_backend.count_tokens(texts)
    vectors, reference = encoder.encode(texts), minilm_backend.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.min(np.sum(vectors * reference, axis=1)) > min_cosine
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # one text alone and in a padded batch: the same vector (padding is masked out of the mean)
    np.testing.assert_allclose(encoder.encode([TEXTS[2]])[0], vectors[2], atol=atol)


def test_openvino_embedding_is_safe_to_call_from_several_threads(prepared_models):
    """Each thread runs its own infer request: concurrent calls (a reranker's thread beside the batch loop) get
    their own texts' vectors."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = make(EMBEDDING_BACKENDS, "openvino", prepared_models / "minilm-embedder" / "onnx")
    batches = [[text] * (i + 1) for i, text in enumerate(TEXTS * 4)]
    alone = [encoder.encode(batch) for batch in batches]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(encoder.encode, batches))
    for expected, got in zip(alone, together, strict=True):
        np.testing.assert_allclose(got, expected, atol=2e-3)


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exported_encoder_refuses_a_folder_without_its_graph(tmp_path, backend):
    from deployments.common import ModelSourceError

    with pytest.raises(ModelSourceError, match="prepare-models"):
        make(EMBEDDING_BACKENDS, backend, tmp_path)


@pytest.mark.parametrize(("registry", "backend", "model", "options"), [
    (RERANK_BACKENDS, "flag-reranker", "cross_encoder", {}),
    (EMBEDDING_BACKENDS, "flag-embedding", "encoder", {"model_class": "m3"}),
])
def test_flag_backends_keep_their_model_on_the_device(tiny_models, monkeypatch, registry, backend, model, options):
    """FlagEmbedding's wrappers move their model to the CPU when they are garbage-collected (`__del__` calls
    `stop_self_pool`, which does `model.to("cpu")`). A backend that kept the model but dropped the wrapper had its
    GPU model moved under it: every rerank on CUDA then failed with tensors on two devices (found by the GPU smoke
    test). On CPU the move is invisible, so the test watches for the wrapper's teardown itself."""
    import gc

    from FlagEmbedding.abc.inference import AbsEmbedder, AbsReranker

    stopped = []
    for wrapper in (AbsEmbedder, AbsReranker):
        monkeypatch.setattr(wrapper, "stop_self_pool", lambda self: stopped.append(getattr(self, "model", None)))
    instance = make(registry, backend, tiny_models[model], **options)
    gc.collect()
    assert not any(model is instance._model for model in stopped)

"""Embedding vectors rendered to JSON: float32's shortest exact form, the same values base64 carries."""

from __future__ import annotations

import base64
import json

import numpy as np

from serve_app.api.responses import VectorJSONResponse
from serve_app.services.embeddings import encode_vector


def test_float_vectors_render_as_the_float32_values_base64_carries():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 384))  # float64, as a backend might hand them over
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    body = {"data": [{"index": i, "embedding": encode_vector(v, "float")} for i, v in enumerate(vectors)]}
    rendered = json.loads(VectorJSONResponse(body).body)
    parsed = np.array([item["embedding"] for item in rendered["data"]]).astype(np.float32)
    decoded = np.array([np.frombuffer(base64.b64decode(encode_vector(v, "base64")), dtype="<f4") for v in vectors])
    np.testing.assert_array_equal(parsed, decoded)
    # float32's shortest form: at most 9 significant digits per number, not float64's 17
    numbers = VectorJSONResponse(body).body.decode().split('"embedding":[')[1].split("]")[0].split(",")
    assert max(len(n.lstrip("-").replace("0.", "", 1).lstrip("0").split("e")[0].replace(".", "")) for n in numbers) <= 9


def test_a_non_contiguous_row_renders_too():
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    body = {"embedding": encode_vector(matrix[:, 1], "float")}
    assert json.loads(VectorJSONResponse(body).body) == {"embedding": [1.0, 5.0, 9.0]}


def test_base64_in_vllms_number_types_and_byte_orders():
    """vLLM's `embed_dtype` and `endianness`: each decodes to the float32 vector within its type's precision."""
    vector = np.random.default_rng(1).standard_normal(384).astype(np.float32)
    vector /= np.linalg.norm(vector)
    for dtype, numpy_type, tolerance in (("float32", "f4", 0), ("float16", "f2", 1e-3)):
        for endianness, order in (("little", "<"), ("big", ">"), ("native", "=")):
            raw = base64.b64decode(encode_vector(vector, "base64", dtype, endianness))
            np.testing.assert_allclose(np.frombuffer(raw, dtype=order + numpy_type), vector, atol=tolerance)
    for endianness, order in (("little", "<"), ("big", ">")):
        top_halves = np.frombuffer(base64.b64decode(encode_vector(vector, "base64", "bfloat16", endianness)),
                                   dtype=order + "u2")
        widened = (top_halves.astype(np.uint32) << 16).view(np.float32)
        np.testing.assert_allclose(widened, vector, rtol=2**-8)  # bfloat16 keeps 8 bits of mantissa

"""OpenAI-compatible (and Cohere/TEI-compatible for rerank) routes under /v1."""

"""HTTP request/response schemas, one module per feature, apart from the logic that serves them."""

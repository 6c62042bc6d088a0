"""The OpenAI-compatible HTTP server over the engine (see docs/serving.md)."""

"""OpenAI and every OpenAI-compatible server."""

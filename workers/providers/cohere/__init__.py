"""Cohere, natively: v2 chat, embed and rerank."""

"""Anthropic's Messages API: adapter and translation."""

"""Anthropic's Messages API (``/v1/messages``) served by any provider.

``request`` turns a Messages body into an OpenAI chat body, ``response`` a chat completion
into a ``Message``, ``stream`` chat chunks into Messages stream events (all pure);
``call`` runs an attempt, natively on a provider that speaks Messages, else translated.
"""

"""Client protocols other than OpenAI chat, for providers that do not speak them natively.

A provider adapter speaks OpenAI chat to the worker; a protocol here turns another client
protocol's body into a chat body and the chat answer back, so every provider serves it.
Translation happens in the worker, not the ingress, because only the worker knows which
provider an attempt goes to: a request that fails over from an Anthropic deployment to an
OpenAI one is passed through natively on one attempt and translated on the next.
"""

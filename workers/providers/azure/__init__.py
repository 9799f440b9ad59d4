"""Azure OpenAI: the OpenAI adapter on Azure's deployment URLs and api-key header."""

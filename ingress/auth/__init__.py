"""Who is calling: API key lookup from the KV mirror, and the principal a request acts as."""

"""`/v1/embeddings`: one module per provider, each calling through that provider's own
session, token cache, retries, timeouts and body cap (the chat client's `Upstream`)."""

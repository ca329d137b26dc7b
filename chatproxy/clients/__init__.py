"""Upstream clients: one module per provider, all implementing `base.ChatClient`."""

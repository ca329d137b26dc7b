"""Thin aiohttp handlers: parse, call a client, shape the answer."""

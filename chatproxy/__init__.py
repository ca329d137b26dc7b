"""chatproxy: one stable endpoint in front of several chat LLMs."""

__version__ = "0.1.0"

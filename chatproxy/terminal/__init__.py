"""`chatproxy chat`: a terminal client that keeps the conversation and streams replies."""

from chatproxy.terminal.main import ChatOptions, main, run

__all__ = ["ChatOptions", "main", "run"]

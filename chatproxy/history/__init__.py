"""Conversations kept server-side: the store interface, its values, and open_store(url).

Importing this package imports no database driver; open_store imports the one it needs.
"""

from chatproxy.history.base import (
    ConversationInfo,
    HistoryStore,
    SchemaVersionError,
    StoredMessage,
    StoreUnavailableError,
    valid_conversation_id,
)
from chatproxy.history.url import open_store

__all__ = [
    "ConversationInfo",
    "HistoryStore",
    "SchemaVersionError",
    "StoreUnavailableError",
    "StoredMessage",
    "open_store",
    "valid_conversation_id",
]

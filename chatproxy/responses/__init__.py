"""OpenAI's Responses API over chatproxy's one chat pipeline and its history store.

A stored response is a conversation in the history store, under the response's own id
(scoped per key like every conversation), holding the last HISTORY_MAX_TURNS turns of the
chain it ends: `previous_response_id` forks that conversation into the new one, so every
id names one immutable point of a chain, branches never disturb each other, and the chain
lives as long and as widely as the store (durable on SQLite/PostgreSQL, shared by every
copy of chatproxy on PostgreSQL/Redis).
"""

"""Operations of the routes `setup_routes` registers itself (meta, native chat, /v1,
/history); routes added elsewhere register their own (see the package docstring)."""

from __future__ import annotations

from chatproxy.config import PROVIDER_NAMES
from chatproxy.handlers.history import ModelChoice
from chatproxy.openai_schemas import ChatCompletion, ChatCompletionChunk, OpenAIChatRequest
from chatproxy.openapi.models import (
    Conversation,
    ConversationDeleted,
    ConversationModel,
    Health,
    NativeDeltaEvent,
    NativeStreamError,
    OpenAIStreamError,
    ProviderModels,
    Readiness,
    ServerStatus,
)
from chatproxy.openapi.registry import Operation, SseEvent, Stream, register
from chatproxy.schemas import ChatRequest, ChatResponse, ModelList

NATIVE_STREAM = Stream(
    [
        SseEvent("delta", NativeDeltaEvent, "The next piece of the reply."),
        SseEvent("done", ChatResponse, "The whole answer, as without `stream`; the end."),
        SseEvent("error", NativeStreamError, "The stream failed after its first byte; the end."),
    ],
    'With `"stream": true`: `event: delta` events, then one `done` or `error`.',
)
OPENAI_STREAM = Stream(
    [
        SseEvent(None, ChatCompletionChunk, "A `chat.completion.chunk`; usage last if asked."),
        SseEvent(None, OpenAIStreamError, "The stream failed after its first byte."),
        SseEvent(None, None, "`data: [DONE]`: the end of every stream.", literal="[DONE]"),
    ],
    'With `"stream": true`: OpenAI\'s `chat.completion.chunk` events, then `data: [DONE]`.',
)
# A chat can fail upstream (502, 504), be rate limited, or meet a provider that is off.
CHAT_ERRORS = (404, 429, 502, 503, 504)
CONVERSATION_ID = {"conversation_id": "A conversation id (it may hold `/`)."}


def _provider_operations() -> list[Operation]:
    operations = []
    for name in PROVIDER_NAMES:
        for path in (f"/{name}/", f"/{name}"):
            operations.append(
                Operation(
                    "POST",
                    path,
                    f"Chat with {name}" + ("" if path.endswith("/") else f" (as /{name}/)"),
                    "chat",
                    description=(
                        "Sends the conversation to the provider and answers the array "
                        "extended by the reply. With `conversation_id` and the history layer "
                        "on, only the new messages need be sent."
                    ),
                    request=ChatRequest,
                    responses={200: ChatResponse},
                    stream=NATIVE_STREAM,
                    errors=CHAT_ERRORS,
                )
            )
    return operations


register(
    Operation("GET", "/health", "Liveness", "meta", responses={200: Health}, public=True),
    Operation(
        "GET",
        "/ready",
        "Readiness",
        "meta",
        description="503 while a provider (or the history store) cannot serve, or at shutdown.",
        responses={200: Readiness, 503: Readiness},
        public=True,
    ),
    Operation("GET", "/status", "Server status", "meta", responses={200: ServerStatus}),
    Operation("GET", "/models", "Every provider's models", "meta", responses={200: ModelList}),
    Operation(
        "GET",
        "/{provider}/models",
        "One provider's models",
        "meta",
        path_params={"provider": "One of: " + ", ".join(PROVIDER_NAMES)},
        errors=(404,),
        responses={200: ProviderModels},
    ),
    Operation(
        "POST",
        "/v1/chat/completions",
        "Chat completion (OpenAI-compatible)",
        "openai",
        description=(
            "OpenAI's `POST /v1/chat/completions`; `model` is `provider/model` "
            "(or a bare OpenAI model). Errors use OpenAI's envelope."
        ),
        request=OpenAIChatRequest,
        responses={200: ChatCompletion},
        stream=OPENAI_STREAM,
        errors=CHAT_ERRORS,
    ),
    Operation(
        "GET",
        "/v1/models",
        "Every provider's models (OpenAI-compatible)",
        "openai",
        responses={200: ModelList},
    ),
    Operation(
        "POST",
        "/history",
        "Start a conversation",
        "history",
        description="Needs the history layer (HISTORY_STORE); the body is optional.",
        request=ModelChoice,
        request_required=False,
        errors=(404,),
        responses={201: ConversationModel},
    ),
    Operation(
        "GET",
        "/history/{conversation_id:.+}/model",
        "A conversation's default model",
        "history",
        path_params=CONVERSATION_ID,
        errors=(400, 404),
        responses={200: ConversationModel},
    ),
    Operation(
        "PUT",
        "/history/{conversation_id:.+}/model",
        "Set a conversation's default model",
        "history",
        path_params=CONVERSATION_ID,
        errors=(400, 404),
        request=ModelChoice,
        responses={200: ConversationModel},
    ),
    Operation(
        "GET",
        "/history/{conversation_id:.+}",
        "Read a conversation",
        "history",
        path_params=CONVERSATION_ID,
        errors=(400, 404),
        responses={200: Conversation},
    ),
    Operation(
        "DELETE",
        "/history/{conversation_id:.+}",
        "Delete a conversation",
        "history",
        path_params=CONVERSATION_ID,
        errors=(400, 404),
        responses={200: ConversationDeleted},
    ),
    # The catch-alls only ever answer 404 or 405: routes, but no API of their own.
    Operation("POST", "/{provider}/", "Unknown provider", "chat", hidden=True),
    Operation("POST", "/{provider}", "Unknown provider", "chat", hidden=True),
    *_provider_operations(),
)

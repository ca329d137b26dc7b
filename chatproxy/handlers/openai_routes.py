"""The `/v1` routes beyond chat completions and the model list, registered in one call
(with what they need for the app's lifetime: the local embedding model)."""

from __future__ import annotations

from aiohttp import web

from chatproxy.embeddings.registry import local_embeddings_context
from chatproxy.handlers import embeddings, openai, responses
from chatproxy.openai_schemas import EmbeddingList, EmbeddingRequest
from chatproxy.openapi import Body, Operation, SseEvent, Stream, register
from chatproxy.responses.schemas import ResponsesRequest
from chatproxy.schemas import ModelCard


def setup_openai_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(local_embeddings_context)
    # `.+`: a model id holds a slash, which the openai SDK sends as `%2F` (aiohttp decodes it).
    app.router.add_get("/v1/models/{model:.+}", openai.retrieve_model)
    app.router.add_post("/v1/embeddings", embeddings.create_embeddings)
    app.router.add_post("/v1/responses", responses.create_response)
    app.router.add_get("/v1/responses/{response_id}", responses.get_response)
    app.router.add_delete("/v1/responses/{response_id}", responses.delete_response)


# OpenAI's `Response` object, built as a dict (tests hold it to the openai SDK's type).
RESPONSE = Body(
    schema={"type": "object", "description": "OpenAI's Response object"},
    description="OpenAI's `Response`: id, status, output items, usage",
)
RESPONSE_EVENTS = Stream(
    [
        SseEvent(name, None)
        for name in (
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.function_call_arguments.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
            "response.incomplete",
            "error",
            "response.failed",
        )
    ],
    description="OpenAI's typed Responses events; each `data` carries its `type`",
)
RESPONSE_ID = {"response_id": "A response id (`resp_...`) this key created"}
register(
    Operation(
        "GET",
        "/v1/models/{model:.+}",
        "One model (OpenAI-compatible)",
        "openai",
        description="The id is `provider/model`; the slash may come encoded (`%2F`).",
        path_params={"model": "`provider/model`, e.g. chatgpt/gpt-4o-mini"},
        errors=(404,),
        responses={200: ModelCard},
    ),
    Operation(
        "POST",
        "/v1/embeddings",
        "Embeddings (OpenAI-compatible)",
        "openai",
        description=(
            "chatgpt/..., gigachat/..., ernie/... or local/ (LOCAL_EMBEDDING_MODEL); inputs "
            "beyond a provider's batch size are split into several upstream calls."
        ),
        request=EmbeddingRequest,
        errors=(400, 404, 502, 503),
        responses={200: EmbeddingList},
    ),
    Operation(
        "POST",
        "/v1/responses",
        "Create a response (OpenAI's Responses API)",
        "openai",
        description=(
            "Every provider; stored responses and previous_response_id chains live in the "
            "history store (HISTORY_STORE)."
        ),
        request=ResponsesRequest,
        errors=(400, 404, 502, 503),
        responses={200: RESPONSE},
        stream=RESPONSE_EVENTS,
    ),
    Operation(
        "GET",
        "/v1/responses/{response_id}",
        "Read a stored response",
        "openai",
        path_params=RESPONSE_ID,
        errors=(404,),
        responses={200: RESPONSE},
    ),
    Operation(
        "DELETE",
        "/v1/responses/{response_id}",
        "Delete a stored response",
        "openai",
        path_params=RESPONSE_ID,
        errors=(404,),
        responses={
            200: Body(schema={"type": "object", "description": "{id, object, deleted: true}"})
        },
    ),
)

"""Settings from the environment and `.env` (pydantic-settings); names are DESIGN.md's."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

PROVIDER_NAMES = ("chatgpt", "gigachat", "ernie", "local")
Provider = Literal["chatgpt", "gigachat", "ernie", "local"]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."

# Presets for `--local-model qwen|llama`: the two model families the seed servers offered.
LOCAL_MODEL_PRESETS = {
    "qwen": "Qwen/Qwen2.5-7B-Instruct",
    "llama": "meta-llama/Llama-3.1-8B-Instruct",
}


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


# Query parameters a database URL may carry a password in (asyncpg, libpq, redis-py).
PASSWORD_PARAMETERS = ("password", "sslpassword", "passwd", "pass")


def store_passwords(url: str) -> list[str]:
    """A store URL's passwords alone, as a driver's error may name one without the URL."""
    try:
        parsed = URL(url)
        found = [parsed.password or ""]
        found += [v for k, v in parsed.query.items() if k.lower() in PASSWORD_PARAMETERS]
    except (ValueError, TypeError):  # not a URL yarl can take; the store says so at start
        return []
    return [secret for secret in found if secret]


class Settings(BaseSettings):
    """Everything chatproxy can be told; secrets are `SecretStr`, so reprs hide them."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
        env_ignore_empty=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    chatgpt_system_prompt: str | None = None
    gigachat_system_prompt: str | None = None
    ernie_system_prompt: str | None = None
    local_system_prompt: str | None = None
    system_prompt_mode: Literal["prepend", "always", "off"] = "prepend"
    default_provider: Provider = "chatgpt"

    openai_api_key: SecretStr | None = Field(
        None, validation_alias=_alias("OPENAI_API_KEY", "API_KEY")
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1", validation_alias=_alias("OPENAI_BASE_URL", "URL_GPT")
    )
    openai_model: str = "gpt-4o-mini"

    gigachat_credentials: SecretStr | None = Field(
        None, validation_alias=_alias("GIGACHAT_CREDENTIALS", "AUTH_CREDENTIALS")
    )
    gigachat_scope: str = Field(
        "GIGACHAT_API_PERS", validation_alias=_alias("GIGACHAT_SCOPE", "SCOPE")
    )
    gigachat_auth_url: str = Field(
        "https://ngw.devices.sberbank.ru:9443/api/v2/oauth",
        validation_alias=_alias("GIGACHAT_AUTH_URL", "AUTH_URL"),
    )
    gigachat_base_url: str = Field(
        "https://gigachat.devices.sberbank.ru/api/v1",
        validation_alias=_alias("GIGACHAT_BASE_URL", "URL_GIGACHAT"),
    )
    gigachat_model: str = "GigaChat"
    gigachat_ca_bundle: Path | None = None
    gigachat_verify_ssl: bool = True

    ernie_api_key: SecretStr | None = None
    ernie_secret_key: SecretStr | None = None
    ernie_auth_url: str = "https://aip.baidubce.com/oauth/2.0/token"
    ernie_base_url: str = "https://aip.baidubce.com/rpc/2.0/ai_custom/v1/wenxinworkshop/chat"
    ernie_model: str = "ernie-speed-128k"

    local_model: str | None = None
    local_device: str = "auto"
    local_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    local_max_batch: int = Field(8, ge=1, le=256)
    local_max_queue: int = Field(64, ge=1)
    local_batch_window_ms: float = Field(0.0, ge=0, le=1000)
    local_continuous_batching: bool = True

    # A secret: a database URL may carry a password (postgresql://user:password@host/db).
    history_store: SecretStr | None = None
    history_max_turns: int = Field(20, ge=1)
    # Redis only: seconds a conversation lives after its last turn; empty keeps it for good.
    history_ttl: float | None = Field(None, gt=0)
    # Seconds one store operation may take before the request gets 503.
    history_timeout: float = Field(5.0, gt=0)

    proxy_api_keys: SecretStr | None = None

    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_messages: int = Field(1000, ge=1)
    upstream_timeout: float = Field(60.0, gt=0)
    upstream_connect_timeout: float = Field(10.0, gt=0)
    upstream_first_byte_timeout: float | None = Field(None, gt=0)
    upstream_read_timeout: float = Field(30.0, gt=0)
    upstream_retries: int = Field(2, ge=0, le=10)
    # The most one upstream answer (a body, or a whole stream) may bring: its bytes are
    # untrusted, and a runaway one must not take the process's memory with it.
    max_upstream_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # A secret: proxy URLs often carry a password (http://user:pass@proxy:3128).
    upstream_proxy: SecretStr | None = None
    models_cache_ttl: float = Field(300.0, ge=0)
    shutdown_timeout: float = Field(30.0, ge=0)
    # Clients (chatproxy/server.py): seconds a new connection has to send a whole request
    # head; an idle keep-alive connection stays open (a later head gets as long); a body
    # has to arrive in (408 after); and how many connections are served at once.
    client_header_timeout: float = Field(10.0, gt=0)
    client_keepalive_timeout: float = Field(75.0, gt=0)
    client_body_timeout: float = Field(30.0, gt=0)
    max_connections: int = Field(1024, ge=1)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    # The log also goes to this file: rotated by size when LOG_FILE_MAX_BYTES > 0, else
    # reopened when logrotate moves it away (WatchedFileHandler).
    log_file: Path | None = None
    log_file_max_bytes: int = Field(10 * 1024 * 1024, ge=0)
    log_file_backups: int = Field(5, ge=0)

    # Client keys one per line in a file an orchestrator mounts; re-read on SIGHUP. A file
    # with no keys accepts none: set, it keeps the API closed even when empty.
    proxy_api_keys_file: Path | None = None

    # GET /metrics asks for a key when keys are on, unless this says false.
    metrics_require_key: bool | None = None

    # Limits (chatproxy/limits.py): per key, per minute; empty is off. RATE_LIMIT_STORE
    # (redis://…) shares the counters between copies; a secret, as its URL may hold one.
    rate_limit_rpm: int | None = Field(None, ge=1)
    rate_limit_tpm: int | None = Field(None, ge=1)
    rate_limit_store: SecretStr | None = None
    chatgpt_max_concurrency: int | None = Field(None, ge=1)
    gigachat_max_concurrency: int | None = Field(None, ge=1)
    ernie_max_concurrency: int | None = Field(None, ge=1)
    local_max_concurrency: int | None = Field(None, ge=1)

    # Behind a gateway: X-Forwarded-For is believed only from these addresses or networks
    # (comma-separated); every route is served under ROOT_PATH (e.g. /chatproxy).
    trusted_proxies: str = ""
    root_path: str = ""
    # Browser origins allowed to call the API (comma-separated, or *); empty is none.
    cors_origins: str = ""

    # Serving processes sharing the port (SO_REUSEPORT); a local model allows only one.
    workers: int = Field(1, ge=1, le=256)

    # The older servers' routes (chatproxy/compat): the provider a route that names none
    # uses; empty picks each older server's own.
    compat_provider: Provider | None = None

    # /v1/embeddings: each provider's embedding model; the local one only when named.
    openai_embedding_model: str = "text-embedding-3-small"
    gigachat_embedding_model: str = "Embeddings"
    ernie_embedding_model: str = "embedding-v1"
    local_embedding_model: str | None = None

    @field_validator("openai_base_url", "gigachat_base_url", mode="after")
    @classmethod
    def _strip_endpoint(cls, url: str) -> str:
        """Accept the older proxy's full `.../chat/completions` URLs as base URLs."""
        url = url.rstrip("/")
        return url.removesuffix("/chat/completions")

    @field_validator("upstream_proxy", mode="after")
    @classmethod
    def _http_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://proxy:3128")
        return value

    @field_validator(
        "local_model",
        "history_store",
        "rate_limit_store",
        "local_embedding_model",
        "compat_provider",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("local_model", mode="after")
    @classmethod
    def _expand_preset(cls, value: str | None) -> str | None:
        return LOCAL_MODEL_PRESETS.get(value, value) if value else value

    @cached_property
    def api_keys(self) -> frozenset[str]:
        """Client keys accepted as `Authorization: Bearer`, empty when auth is off (parsed
        once: the middleware asks on every request)."""
        raw = self.proxy_api_keys.get_secret_value() if self.proxy_api_keys else ""
        return frozenset(key.strip() for key in raw.split(",") if key.strip())

    def system_prompt_for(self, provider: str) -> str:
        override: str | None = getattr(self, f"{provider}_system_prompt", None)
        return self.system_prompt if override is None else override

    def first_byte_timeout(self) -> float:
        return self.upstream_first_byte_timeout or self.upstream_timeout

    def secrets(self) -> list[str]:
        """Every secret value, so the log filter can scrub them wherever they appear."""
        values = [
            self.openai_api_key,
            self.gigachat_credentials,
            self.ernie_api_key,
            self.ernie_secret_key,
            self.upstream_proxy,
        ]
        found = [v.get_secret_value() for v in values if v is not None]
        for store in (self.history_store, self.rate_limit_store):
            if store is None:
                continue
            # A store URL is a secret only when it holds one (a password, or one that may be
            # hidden in a form yarl cannot parse); sqlite:///./chatproxy.db shows as it is.
            url = store.get_secret_value()
            passwords = store_passwords(url)
            if passwords or "@" in url:
                found += [url, *passwords]
        return [s for s in (*found, *self.api_keys) if len(s) >= 4]

"""Settings: one object, read from `MAS_*` environment variables (nested with `__`) or `.env`.

Defaults serve a newcomer: in-memory transport, nothing to install or start.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AmqpSettings",
    "ApiSettings",
    "AuthSettings",
    "LLMSettings",
    "MailboxSettings",
    "OutboxSettings",
    "RetrySettings",
    "Settings",
    "SupervisorSettings",
    "WorkerSettings",
    "masked_url",
]

Overflow = Literal["block", "reject", "drop_oldest"]


class MailboxSettings(BaseModel):
    """Default mailbox of every agent (an agent class may override both)."""

    capacity: int = Field(1000, ge=1, description="messages a mailbox holds before overflow")
    overflow: Overflow = "block"
    defer_delay: float = Field(
        0.25,
        gt=0,
        description="seconds a delivery from another node that found its mailbox full waits "
        "in the broker before it is offered again (no attempt is counted)",
    )


class RetrySettings(BaseModel):
    """How a message whose handler raised is retried before it goes to dead letters."""

    max_attempts: int = Field(3, ge=1)
    base_delay: float = Field(0.1, ge=0, description="seconds before the first retry")
    max_delay: float = Field(30.0, ge=0)
    jitter: float = Field(0.1, ge=0, le=1, description="+/- fraction of each delay")


class SupervisorSettings(BaseModel):
    """Restart intensity and backoff of supervisors that do not set their own."""

    max_restarts: int = Field(20, ge=0)
    period: float = Field(10.0, gt=0, description="seconds over which restarts are counted")
    backoff_base: float = Field(0.0, ge=0, description="delay before the 2nd restart in a row")
    backoff_max: float = Field(5.0, ge=0)
    jitter: float = Field(0.1, ge=0, le=1)


class AuthSettings(BaseModel):
    """JWT bearer auth of the gateway (HS256 with a shared secret)."""

    jwt_secret: SecretStr | None = Field(
        None, description="signs and checks tokens; `mas up` generates one when unset"
    )
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    public_health: bool = Field(True, description="/livez and /readyz need no token")
    public_metrics: bool = Field(True, description="/metrics needs no token")


class ApiSettings(BaseModel):
    """Where the gateway listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_wait: float = Field(60.0, gt=0, description="longest ?wait= a client may ask for")
    write_timeout: float = Field(
        10.0, gt=0, description="seconds a request waits for the database to record a task"
    )
    access_log: bool = Field(
        True,
        description="log one line per HTTP request (off when a proxy in front logs them)",
    )
    max_queue_depth: int = Field(
        10_000,
        ge=0,
        description="messages waiting in the broker for a task's target beyond which new "
        "tasks for it get 429 (read at most once a second per target; 0: no limit)",
    )
    max_streams_per_caller: int = Field(
        20,
        ge=1,
        description="event streams (GET /tasks/{id}/events) one token subject may hold open "
        "at once; more get 429",
    )
    stream_poll_interval: float = Field(
        0.5,
        gt=0,
        le=60,
        description="seconds between the gateway's one shared read of the statuses its open "
        "event streams watch (changes other nodes record; this node's own are pushed)",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) whose pages may call the gateway, e.g. "
        "MAS_API__CORS_ORIGINS='[\"https://ui.example.com\"]'; empty: CORS off",
    )

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        """An origin is what a browser sends in `Origin`: a path or a slash never matches."""
        for origin in origins:
            parts = urlsplit(origin)
            if origin != "*" and (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or origin != f"{parts.scheme}://{parts.netloc}"
            ):
                raise ValueError(
                    f"{origin!r} is not an origin: write scheme://host[:port], no path or "
                    "trailing slash (or * for any)"
                )
        return origins


class AmqpSettings(BaseModel):
    """The RabbitMQ transport (`MAS_TRANSPORT=rabbitmq`); the URL is `MAS_AMQP_URL`.

    `agents.dead_letter` is bounded (`dead_letter_*`, 0 turns a bound off): dead letters are
    for an operator to look at, not an archive, and a storm of poison messages must not fill
    the broker's disk. 64 KiB of a body shows what a message was (id, type, addresses, the
    start of its payload; headers say why, and how big it was); 100,000 letters or 256 MiB of
    bodies, whichever comes first, then the oldest go (drop-head: the newest say most about
    what is wrong now); a week covers a long weekend. Each task's final status outlives that
    in the journal. A queue declared before with other bounds keeps them (see the warning
    `amqp_dead_letter_queue_not_bounded` for the policy that applies these).
    """

    prefix: str = Field(
        "", max_length=64, description="prepended to every exchange and queue name (tests)"
    )
    prefetch: int = Field(
        256, ge=1, le=65535, description="unacknowledged deliveries a node holds at once"
    )
    publish_timeout: float = Field(
        10.0, gt=0, description="seconds a send may wait for the broker's confirm, retries included"
    )
    connect_timeout: float = Field(10.0, gt=0)
    queue_type: Literal["quorum", "classic"] = Field(
        "quorum", description="agent and type queues: quorum (replicated) or classic"
    )
    dead_letter_max_body: int = Field(
        65_536,
        ge=0,
        description="bytes of a body mas puts in agents.dead_letter (the rest is cut off)",
    )
    dead_letter_max_length: int = Field(
        100_000, ge=0, description="letters agents.dead_letter keeps; the oldest go first"
    )
    dead_letter_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="body bytes agents.dead_letter keeps; the oldest go first",
    )
    dead_letter_ttl: float = Field(
        7 * 24 * 3600.0, ge=0, description="seconds a letter stays in agents.dead_letter"
    )


class OutboxSettings(BaseModel):
    """The outbox relay: what a commit decided to send is sent even if this process dies."""

    lease: float = Field(
        10.0,
        gt=0,
        description="seconds a node holds a message it must send before another node's "
        "relay may send it instead (renewed while the node lives)",
    )
    sweep_interval: float = Field(
        1.0, gt=0, description="seconds between looks for messages whose node went away"
    )


class WorkflowSettings(BaseModel):
    """Durable workflows inside handlers (`ctx.step`, `ctx.sleep`, `ctx.signal`)."""

    park_after: float = Field(
        5.0,
        ge=0,
        description="seconds: a durable wait (ctx.sleep, ctx.signal) longer than this parks "
        "its handler (the agent takes other messages, the delivery is acknowledged) and the "
        "message is handled again when the wait ends; a shorter one waits in the handler",
    )


class WorkerSettings(BaseModel):
    """`mas worker`: where it serves /metrics, /livez and /readyz (off unless a port is set)."""

    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="port of the worker's /metrics, /livez and /readyz (0: any free port; "
        "unset: none served)",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="address the metrics port listens on (0.0.0.0 in a pod)"
    )


class LLMSettings(BaseModel):
    """The language model the planner calls: any OpenAI-compatible chat-completions server."""

    base_url: str | None = Field(
        None,
        description="the API's base URL, up to the version (https://api.openai.com/v1, "
        "http://localhost:11434/v1); unset: the planner plans by its rules, calling no model",
    )
    api_key: SecretStr | None = Field(None, description="sent as a Bearer token; never logged")
    model: str = Field("gpt-4o-mini", min_length=1, description="the model to ask")
    timeout: float = Field(60.0, gt=0, description="seconds one call may take")
    attempts: int = Field(
        4,
        ge=1,
        le=20,
        description="calls per answer when the server is busy or down (429, 5xx, timeouts)",
    )
    retry_after_max: float = Field(
        60.0, ge=0, description="the longest Retry-After the planner waits in one go"
    )
    plan_attempts: int = Field(
        3,
        ge=1,
        le=10,
        description="answers asked for until one is a valid plan (each retry shows the model "
        "why its plan was refused)",
    )
    replans: int = Field(
        1,
        ge=0,
        le=5,
        description="new plans the LLM planner may make when a step of its plan fails",
    )
    prompt_price: float = Field(
        0.0, ge=0, description="what a million prompt tokens cost (any currency): for `cost`"
    )
    completion_price: float = Field(
        0.0, ge=0, description="what a million completion tokens cost, in the same currency"
    )
    requests_per_window: int | None = Field(
        None,
        ge=1,
        description="calls to the model in any `rate_window` seconds, by all workers together "
        "(shared through Redis when MAS_REDIS_URL is set); unset: no limit",
    )
    tokens_per_window: int | None = Field(
        None, ge=1, description="tokens the calls in any `rate_window` seconds may spend"
    )
    rate_window: float = Field(
        60.0, gt=0, le=86_400, description="seconds the rate limits count over (a minute)"
    )
    answer_tokens: int = Field(
        1024,
        ge=1,
        description="tokens reserved for an answer whose request sets no max_tokens, until "
        "the server says what it spent",
    )


class Settings(BaseSettings):
    """Everything configurable; `MAS_TRANSPORT` alone switches one-process to distributed."""

    model_config = SettingsConfigDict(
        env_prefix="MAS_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    transport: Literal["memory", "rabbitmq"] = "memory"
    node_id: str | None = Field(None, description="this process's name; generated when unset")
    message_max_bytes: int = Field(1_048_576, ge=256)
    serialize_messages: bool = Field(
        False, description="round-trip every message through JSON even in one process"
    )
    dedupe_window: int = Field(10_000, ge=0, description="message ids remembered per agent")
    dedupe_budget: int = Field(
        1_000_000,
        ge=4,
        description="message ids remembered by all agents of a process together; past it "
        "idle agents' windows are dropped (recalled from the journal when they next run)",
    )
    dedupe_ttl: float = Field(
        3600.0, gt=0, description="seconds a cluster-wide dedupe claim lives in Redis"
    )
    shutdown_timeout: float = Field(10.0, ge=0)
    heartbeat_interval: float = Field(
        5.0,
        gt=0,
        description="seconds between a node's heartbeats; an agent is live for 3 of them",
    )
    mailbox: MailboxSettings = MailboxSettings()
    retry: RetrySettings = RetrySettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    auth: AuthSettings = AuthSettings()
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    # What the `mas` commands pass to `configure_logging`; an embedded Runtime reads only
    # `log_level`, to log every handled message when it is DEBUG.
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    amqp: AmqpSettings = AmqpSettings()
    database_url: SecretStr = SecretStr("sqlite+aiosqlite:///./mas.db")
    database_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds any one database call may take (connect, pool wait, statement)",
    )
    database_schema: str | None = Field(
        None, description="PostgreSQL schema to use (tests use one per run)"
    )
    persist: bool = Field(
        False, description="record agents, tasks and messages in MAS_DATABASE_URL"
    )
    outbox: OutboxSettings = OutboxSettings()
    workflow: WorkflowSettings = WorkflowSettings()
    llm: LLMSettings = LLMSettings()
    audit: Literal["all", "tasks", "off"] = Field(
        "all", description="which messages the audit records (when persisting)"
    )
    redis_url: SecretStr | None = None

    @property
    def heartbeat_ttl(self) -> float:
        """How long a heartbeat vouches for its node: three intervals (one lost is no death)."""
        return 3 * self.heartbeat_interval


def masked_url(url: str) -> str:
    """A service URL with any password hidden, for banners, logs and errors."""
    parts = urlsplit(url)
    credentials, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    user, has_password, _ = credentials.partition(":")
    # A lone user part may be a password too (`redis://secret@host`): hide it either way.
    netloc = f"{user}:***@{host}" if has_password else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))

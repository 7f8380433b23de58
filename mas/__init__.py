"""mas: a multi-agent system runtime — supervised actors with mailboxes, in one process or many.

Everything importable from here is the public API; other modules may change without notice.
"""

from mas.actors.agent import Agent, AgentContext, HandlerResult, Terminated
from mas.actors.backoff import RetryPolicy
from mas.actors.deadletters import DeadLetter, DeadLetters, DeadLetterSubscription
from mas.actors.journal import Journal
from mas.actors.ref import AgentRef
from mas.actors.supervisor import ChildSpec, Restart, Strategy, Supervisor
from mas.actors.workflow import StepRecord
from mas.config import Settings
from mas.errors import (
    AgentStartError,
    AgentStopped,
    AskTimeout,
    ConfigError,
    DeadLetterSettled,
    DeliveryError,
    DuplicateAgent,
    HandlerError,
    HandlerReturnError,
    IdempotencyKeyReused,
    InvalidAddress,
    InvalidMessage,
    MailboxFull,
    MasError,
    MessageTooLarge,
    QueueFull,
    RedisUnavailable,
    RuntimeNotRunning,
    SchemaOutdated,
    ServiceUnavailable,
    SignalTimeout,
    StepResultNotJSON,
    StoreTimeout,
    StoreUnavailable,
    SupervisorEscalation,
    TaskFinished,
    TaskIdTaken,
    TransportError,
    UnknownAgent,
    UnknownCapability,
    UnknownDeadLetter,
    UnknownTask,
    UsageError,
    WorkflowDiverged,
)
from mas.messages import Address, Message, TaskError, TaskResult, parse_address, topic_matches
from mas.runtime import Runtime

__version__ = "0.1.0"

__all__ = [
    "Address",
    "Agent",
    "AgentContext",
    "AgentRef",
    "AgentStartError",
    "AgentStopped",
    "AskTimeout",
    "ChildSpec",
    "ConfigError",
    "DeadLetter",
    "DeadLetterSettled",
    "DeadLetterSubscription",
    "DeadLetters",
    "DeliveryError",
    "DuplicateAgent",
    "HandlerError",
    "HandlerResult",
    "HandlerReturnError",
    "IdempotencyKeyReused",
    "InvalidAddress",
    "InvalidMessage",
    "Journal",
    "MailboxFull",
    "MasError",
    "Message",
    "MessageTooLarge",
    "QueueFull",
    "RedisUnavailable",
    "Restart",
    "RetryPolicy",
    "Runtime",
    "RuntimeNotRunning",
    "SchemaOutdated",
    "ServiceUnavailable",
    "Settings",
    "SignalTimeout",
    "StepRecord",
    "StepResultNotJSON",
    "StoreTimeout",
    "StoreUnavailable",
    "Strategy",
    "Supervisor",
    "SupervisorEscalation",
    "TaskError",
    "TaskFinished",
    "TaskIdTaken",
    "TaskResult",
    "Terminated",
    "TransportError",
    "UnknownAgent",
    "UnknownCapability",
    "UnknownDeadLetter",
    "UnknownTask",
    "UsageError",
    "WorkflowDiverged",
    "__version__",
    "parse_address",
    "topic_matches",
]

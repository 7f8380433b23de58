"""The public API: exactly what `mas` exports, and that importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mas

EXPORTED = [
    "Address",
    "Agent",
    "AgentContext",
    "AgentRef",
    "AgentStartError",
    "AgentStopped",
    "AskTimeout",
    "Budget",
    "BudgetExceeded",
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
    "Rejected",
    "Restart",
    "RetryPolicy",
    "Runtime",
    "RuntimeNotRunning",
    "SchemaOutdated",
    "ServiceUnavailable",
    "Settings",
    "SignalTimeout",
    "StartedAgent",
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
    "TooManyStreams",
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

OPTIONAL_HEAVY_DEPENDENCIES = ["aio_pika", "taskiq", "sqlalchemy", "redis", "fastapi"]


def test_all_is_pinned():
    """Adding or removing a public name is a deliberate act: update this list with it."""
    assert sorted(mas.__all__) == EXPORTED
    assert len(set(mas.__all__)) == len(mas.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_every_exported_name_is_importable(name):
    assert getattr(mas, name) is not None


def test_public_classes_claim_a_public_module():
    for name in EXPORTED:
        member = getattr(mas, name)
        if isinstance(member, type):
            assert member.__module__.startswith("mas."), name


def test_version_is_a_string():
    assert isinstance(mas.__version__, str)
    assert mas.__version__


def test_import_mas_does_not_import_optional_dependencies():
    code = (
        "import sys, mas\n"
        f"heavy = {OPTIONAL_HEAVY_DEPENDENCIES!r}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & set(heavy))))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert completed.stdout.strip() == ""

"""Test kit: a deterministic runtime, probes, fault injection and a pytest plugin."""

from mas.testing.clock import ManualClock
from mas.testing.faults import Crash, FaultPlan, crashing
from mas.testing.probe import Probe
from mas.testing.runtime import TestRuntime
from mas.testing.waiting import eventually

__all__ = [
    "Crash",
    "FaultPlan",
    "ManualClock",
    "Probe",
    "TestRuntime",
    "crashing",
    "eventually",
]

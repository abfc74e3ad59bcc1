"""The readiness probe and fault-rule setter the supervisor calls, behind a seam for tests.

By default these are distlog.client.probe's ping() and set_fault_rules(), imported only when a
cluster starts; DISTLOG_PROBE_MODULE names another module with the same two functions (a test
stand-in for a broker speaking another protocol).
"""

import importlib
import os
from dataclasses import dataclass
from typing import Callable

PROBE_MODULE_ENV = "DISTLOG_PROBE_MODULE"
DEFAULT_PROBE_MODULE = "distlog.client.probe"


@dataclass(frozen=True)
class Probe:
    """ping(endpoint, timeout_s) -> {"broker_id", "controller_id", ...} | None;
    set_fault_rules(endpoint, rules, timeout_s) -> None (raises if the broker did not take them)."""

    ping: Callable[[str, float], dict | None]
    set_fault_rules: Callable[[str, dict, float], None]


def load_probe() -> Probe:
    """The probe module's functions; ImportError with the module name if it cannot be loaded."""
    name = os.environ.get(PROBE_MODULE_ENV, DEFAULT_PROBE_MODULE)
    module = importlib.import_module(name)
    return Probe(ping=module.ping, set_fault_rules=module.set_fault_rules)

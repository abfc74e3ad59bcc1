"""The calls the supervisor makes to brokers (probe, metadata, fault rules), behind a seam for tests.

By default these are distlog.client.probe's ping(), metadata() and set_fault_rules(), imported only
when a cluster starts; DISTLOG_PROBE_MODULE names another module with the same functions (a test
stand-in for a broker speaking another protocol; one without metadata() skips the health check).
"""

import importlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

PROBE_MODULE_ENV = "DISTLOG_PROBE_MODULE"
DEFAULT_PROBE_MODULE = "distlog.client.probe"


@dataclass(frozen=True)
class Probe:
    """ping(endpoint, timeout_s) -> {"broker_id", "controller_id", ...} | None;
    set_fault_rules(endpoint, rules, timeout_s) -> None (raises if the broker did not take them);
    metadata(endpoint, timeout_s) -> {"brokers", "controller_id", "topics"} | None, or no
    metadata at all when the brokers cannot be asked for it."""

    ping: Callable[[str, float], dict | None]
    set_fault_rules: Callable[[str, dict, float], None]
    metadata: Callable[[str, float], dict | None] | None = None


def load_probe() -> Probe:
    """The probe module's functions; ImportError with the module name if it cannot be loaded."""
    name = os.environ.get(PROBE_MODULE_ENV, DEFAULT_PROBE_MODULE)
    module = importlib.import_module(name)
    return Probe(ping=module.ping, set_fault_rules=module.set_fault_rules,
                 metadata=getattr(module, "metadata", None))


def ask_every_broker(ask: Callable[[str, float], object], addresses: dict, timeout_s: float) -> dict:
    """{broker_id: ask(address, timeout_s)} for addresses {broker_id: address}, all asked at once,
    so brokers that do not answer cost timeout_s in all rather than each."""
    if not addresses:
        return {}
    with ThreadPoolExecutor(max_workers=len(addresses)) as pool:
        pending = {broker_id: pool.submit(ask, address, timeout_s) for broker_id, address in addresses.items()}
        return {broker_id: future.result() for broker_id, future in pending.items()}

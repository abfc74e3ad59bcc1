"""Loopback ports for brokers and their metrics: pick free ones, or check that the ones asked for are free."""

import socket


class PortError(Exception):
    """A port the cluster needs is taken; the message names it."""


def port_is_free(port: int) -> bool:
    """True if a listener could bind 127.0.0.1:port now (SO_REUSEADDR, as ZeroMQ binds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, avoid=()) -> list[int]:
    """`count` distinct ports the kernel hands out now, none in `avoid`.

    They are released before the brokers bind them, so another process can take one in between
    (tests running in parallel do). A broker that loses the race exits with "Address already in
    use"; callers must be ready for it: the supervisor reports that broker's log,
    distlog.broker.launcher and the in-process test brokers start again on fresh ports.
    """
    held, ports = [], []
    try:
        while len(ports) < count:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(probe)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            if port not in avoid:
                ports.append(port)
    finally:
        for probe in held:
            probe.close()
    return ports


# With --port-base B, broker N listens on B+N-1 and serves metrics on B+METRICS_PORT_OFFSET+N-1
# (9092 -> 10092): far enough apart that brokers added later never run into the metrics range.
METRICS_PORT_OFFSET = 1000


def ports_from_base(port_base: int, broker_ids, offset: int = 0, kind: str = "port") -> dict[int, int]:
    """{id: port_base + offset + id - 1}, every one checked free; PortError names the first taken
    one. `kind` names the ports in messages ("port", "metrics port")."""
    ports = {broker_id: port_base + offset + broker_id - 1 for broker_id in broker_ids}
    for broker_id, port in ports.items():
        if not 0 < port < 65536:
            raise PortError(f"--port-base {port_base} puts the {kind} of broker {broker_id} at {port}, "
                            f"outside 1-65535")
        if not port_is_free(port):
            raise PortError(f"{kind} {port} for broker {broker_id} is in use on 127.0.0.1 "
                            f"(pick another --port-base, or leave it out to use free ports)")
    return ports


def metrics_ports_from_base(port_base: int, broker_ids) -> dict[int, int]:
    """The metrics ports that go with --port-base (see METRICS_PORT_OFFSET), checked free."""
    return ports_from_base(port_base, broker_ids, METRICS_PORT_OFFSET, "metrics port")

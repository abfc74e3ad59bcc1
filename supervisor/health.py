"""Cluster health from every broker's Metadata answer: a pure function, no sockets (as `rpk cluster health`).

The caller asks each broker for its metadata at once and hands over what came back (None for a
broker that did not answer in time). From those answers:

- brokers_down: the brokers that should be there and gave no answer.
- controller_id: the controller a majority of the answers name, else the first answer's (by
  broker id); None or a negative id means none is known.
- a partition's leader is the broker whose own answer says it leads the partition. Other brokers
  know leadership and in-sync replicas only from the leader's last report, so the leader's own
  entry is the exact one; if two brokers claim it (a deposed leader that has not noticed yet),
  the higher leader epoch wins. A partition no answering broker leads is leaderless: its leader
  is unknown, or down and not yet replaced.
- under-replicated: a partition whose leader counts fewer in-sync replicas than replicas. A
  leaderless partition is not counted here too (it has no leader to count), as in Kafka's metrics.

healthy = a controller is known, no broker is down, and no partition is leaderless or
under-replicated.
"""

NO_BROKER_ANSWERED = "no_broker_answered"
NO_CONTROLLER = "no_controller"
BROKERS_DOWN = "brokers_down"
LEADERLESS = "leaderless_partitions"
UNDER_REPLICATED = "under_replicated_partitions"

# How many partitions a one-line summary names before it says "and N more".
SUMMARY_PARTITIONS_MAX = 5


def cluster_health(broker_ids, answers: dict) -> dict:
    """The health report of a cluster that should have broker_ids, from answers
    {broker_id: {"brokers", "controller_id", "topics"} as a MetadataResponse has them, or None}."""
    answered = {broker_id: answer for broker_id, answer in sorted(answers.items()) if answer is not None}
    all_brokers = sorted(set(broker_ids))
    brokers_down = [broker_id for broker_id in all_brokers if broker_id not in answered]
    controller_id = controller_of(answered)
    leaders = partition_leaders(answered)
    leaderless = [key for key, entry in leaders.items() if entry is None]
    under_replicated = [key for key, entry in leaders.items()
                        if entry is not None and len(entry["in_sync"]) < len(entry["replicas"])]
    reasons = [reason for reason, present in (
        (NO_BROKER_ANSWERED, not answered), (NO_CONTROLLER, answered and controller_id is None),
        (BROKERS_DOWN, brokers_down), (LEADERLESS, leaderless), (UNDER_REPLICATED, under_replicated),
    ) if present]
    return {
        "healthy": not reasons,
        "unhealthy_reasons": reasons,
        "controller_id": controller_id,
        "all_brokers": all_brokers,
        "brokers_down": brokers_down,
        "partitions_total": len(leaders),
        "leaderless_count": len(leaderless),
        "leaderless_partitions": [_named(key) for key in leaderless],
        "under_replicated_count": len(under_replicated),
        "under_replicated_partitions": [_named(key) for key in under_replicated],
    }


def controller_of(answered: dict) -> int | None:
    """The controller most answers agree on if a majority does, else the first answer's."""
    named = [_known_id(answer.get("controller_id")) for answer in answered.values()]
    for candidate in set(named) - {None}:
        if named.count(candidate) * 2 > len(named):
            return candidate
    return named[0] if named else None


def partition_leaders(answered: dict) -> dict:
    """{(topic, partition): the leader's own entry for it, or None when no answer claims it},
    over every partition of every topic any answer knows, sorted."""
    leaders = {}
    for broker_id, answer in answered.items():
        for topic in answer.get("topics", []):
            if topic.get("error_code"):
                continue
            for entry in topic["partitions"]:
                key = (topic["name"], entry["partition"])
                best = leaders.get(key)
                if entry["leader"] == broker_id and (best is None or entry["leader_epoch"] > best["leader_epoch"]):
                    leaders[key] = entry
                else:
                    leaders.setdefault(key, None)
    return dict(sorted(leaders.items()))


def unhealthy_summary(health: dict) -> str:
    """What is wrong, in one line for a message: "broker 2 down; 3 under-replicated partitions (t/0, ...)"."""
    parts = []
    if NO_BROKER_ANSWERED in health["unhealthy_reasons"]:
        parts.append("no broker answered")
    if NO_CONTROLLER in health["unhealthy_reasons"]:
        parts.append("no controller is known")
    down = health["brokers_down"]
    if down:
        parts.append(f"broker{'s' if len(down) > 1 else ''} {', '.join(map(str, down))} down")
    for count_key, list_key, what in (("leaderless_count", "leaderless_partitions", "without a leader"),
                                      ("under_replicated_count", "under_replicated_partitions", "under-replicated")):
        if health[count_key]:
            noun = "partition" if health[count_key] == 1 else "partitions"
            parts.append(f"{health[count_key]} {noun} {what} ({partitions_text(health[list_key], SUMMARY_PARTITIONS_MAX)})")
    return "; ".join(parts) or "healthy"


def partitions_text(partitions: list, most: int | None = None) -> str:
    """"orders/0, orders/2" (and "and N more" past `most`)."""
    names = [f"{p['topic']}/{p['partition']}" for p in partitions]
    if most is not None and len(names) > most:
        return ", ".join(names[:most]) + f" and {len(names) - most} more"
    return ", ".join(names)


def _known_id(broker_id) -> int | None:
    return broker_id if broker_id is not None and broker_id >= 0 else None


def _named(key: tuple) -> dict:
    return {"topic": key[0], "partition": key[1]}

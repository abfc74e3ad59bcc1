"""Network partitions as fault rules: from "these groups cannot talk" to each broker's drop lists.

A cut (a, b) means frames from broker a to broker b are lost. Both ends enforce it — a drops what
it sends to b, b drops what it receives from a — so a cut holds even while one side restarts and
has not had its rules re-applied yet.
"""


def cuts_between(groups) -> set[tuple[int, int]]:
    """Every ordered pair of brokers in different groups: the groups cannot talk, both ways.

    Brokers in no group keep talking to everyone: `[[1, 2], [4, 5]]` with broker 3 left out is
    Jepsen's bridge.
    """
    cuts = set()
    for index, group in enumerate(groups):
        for other in groups[index + 1:]:
            for a in group:
                for b in other:
                    cuts.update({(a, b), (b, a)})
    return cuts


def rules_for_cuts(broker_ids, cuts) -> dict[int, dict]:
    """{id: {"drop_to": [...], "drop_from": [...]}} for every broker; empty lists heal it.

    ValueError if a cut names a broker that is not in broker_ids, or a broker and itself.
    """
    known = set(broker_ids)
    rules = {broker_id: {"drop_to": [], "drop_from": []} for broker_id in sorted(known)}
    for a, b in sorted(cuts):
        if a not in known or b not in known:
            raise ValueError(f"cut {a}->{b} names a broker that is not in the cluster "
                             f"(brokers are {', '.join(map(str, sorted(known)))})")
        if a == b:
            raise ValueError(f"broker {a} cannot be cut off from itself")
        rules[a]["drop_to"].append(f"broker-{b}")
        rules[b]["drop_from"].append(f"broker-{a}")
    return rules

"""Reassignment: walking a partition's Raft group to a target set of replicas, one server at a time.

The controller records where a partition is to go (metadata.TopicMetadata.targets); the
partition's leader walks its group there, because only a leader appends membership entries.
Each step is one single-server membership change (thesis §4.1: any majority of the old voters
overlaps any majority of the new), and the core takes the next only once the last is committed,
so a reassignment can never have two changes in flight in one group. In order:

  1. a learner the target does not want (a reassignment changed or cancelled half-way) goes;
  2. a learner the target wants is promoted once it holds everything committed (its match
     index reached the leader's commit index): promoting a learner far behind would make the
     new majority wait for it;
  3. else the first target broker not yet in the group is added as a learner (one at a time,
     so one catch-up at a time reads the leader's log), and step 2 waits for it;
  4. once every target broker votes, each voter the target drops is removed; the leader, if
     it is one of them, first hands leadership to a caught-up target voter (removing itself
     would leave the group leaderless for an election timeout, and writes would fail).

The reassignment is done when the committed membership is exactly the target's voters and no
learners; the leader then reports it (MetadataSync) and the controller makes the target the
partition's replicas. Writes keep flowing throughout: each change is one small entry.

Pure: next_step looks at numbers, the manager (manager.drive_reassignments) acts on them.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Sequence


class Step(NamedTuple):
    """What the leader does next: `action` is one of WAIT, ADD_LEARNER, PROMOTE, REMOVE,
    TRANSFER (leadership to `node`) and DONE; `node` the broker it concerns."""

    action: str
    node: Optional[int] = None


WAIT, ADD_LEARNER, PROMOTE, REMOVE, TRANSFER, DONE = "wait", "add_learner", "promote", "remove", "transfer", "done"


def next_step(leader: int, voters: Sequence[int], learners: Sequence[int], change_pending: bool,
              match: Mapping[int, int], commit: int, target: Sequence[int]) -> Step:
    """The next step of moving a group (led by `leader`, membership voters + learners, its
    followers' match indexes `match`) to the voters `target` (see the module docstring)."""
    if change_pending:
        return Step(WAIT)  # the last membership entry is not committed yet
    wanted = set(target)
    for learner in learners:
        if learner not in wanted:
            return Step(REMOVE, learner)
    for learner in learners:
        if match.get(learner, -1) >= commit:
            return Step(PROMOTE, learner)
    if learners:
        return Step(WAIT, learners[0])  # catching up
    for broker in target:
        if broker not in voters:
            return Step(ADD_LEARNER, broker)
    leaving = [v for v in voters if v not in wanted]
    if not leaving:
        return Step(DONE)
    others = [v for v in leaving if v != leader]
    if others:
        return Step(REMOVE, others[0])
    successor = next((b for b in target if match.get(b, -1) >= commit), None)
    return Step(TRANSFER, successor) if successor is not None else Step(WAIT)

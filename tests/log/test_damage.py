"""Damage through the storage API (issue #12): real bytes flipped or cut in a closed segment.

Whatever the damage, nothing acknowledged is deleted (every byte the log held is either still
live or in quarantine, unchanged) and nothing corrupt is served: a read returns sound batches
or raises CorruptDataError, never damaged bytes. Recovery quarantines what it cannot trust and
says which offsets the log lost (log.damage); a read that finds damage does the same through
quarantine_damaged."""

import json
import os

import pytest

from distlog.log.batch import HEADER_SIZE, iter_batches
from distlog.log.errors import CorruptDataError
from distlog.log.recovery import DAMAGE_RECORD, QUARANTINE_DIR
from tests.log.helpers import read_all, values_batch

SETTINGS = dict(segment_bytes=400, index_interval_bytes=1)
RECORDS = 40  # 20 batches of 2 records, in 10 segments of 2 batches

# Byte positions in a batch (docs/FORMAT.md): each field of the header, then the record table
# and the payload.
FIELDS = {"magic": 0, "base_offset": 1, "batch_length": 9, "leader_term_high": 16, "crc": 17,
          "attributes": 21, "record_count": 23, "last_offset_delta": 27,
          "last_offset_delta_high": 28,  # +4096 offsets: the segment then claims far past the next one "first_timestamp": 31,
          "max_timestamp": 39, "producer_id": 47, "producer_epoch": 55, "base_sequence": 57,
          "record_table": HEADER_SIZE + 2, "payload": HEADER_SIZE + 2 * 24 + 3}


def _fill(log):
    for i in range(RECORDS // 2):
        log.append(values_batch(b"record-%02d" % i, b"x" * 20), leader_term=1 + i // 10)
    log.close()


def _segment_paths(directory):
    return [os.path.join(directory, n) for n in sorted(os.listdir(directory)) if n.endswith(".log")]


def _quarantined(directory):
    root = os.path.join(directory, QUARANTINE_DIR)
    return [os.path.join(root, name) for name in sorted(os.listdir(root))] if os.path.isdir(root) else []


def _batch_starts(path):
    with open(path, "rb") as f:
        data = f.read()
    starts, position = [], 0
    for batch in iter_batches(data, verify=False):
        starts.append(position)
        position += batch.batch_length
    return starts


def _flip(path, position, mask=0x10):
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ mask]))


def _read_everything(log):
    """Read the log from its start as a consumer would; on damage, quarantine it as the broker
    does and go on. Returns the records served."""
    while True:
        try:
            return read_all(log, max_bytes=1)
        except CorruptDataError as error:
            log.quarantine_damaged(error)


def _assert_nothing_lost(directory, before):
    """Every .log file the log held exists, live or quarantined, byte-identical to what it was
    (`before`, taken after the damage: the damaged file is kept as found)."""
    after_quarantine = {}
    for path in _quarantined(directory):
        for name in os.listdir(path):
            if name.endswith(".log"):
                with open(os.path.join(path, name), "rb") as f:
                    after_quarantine[name] = f.read()
    for name, data in before.items():
        live_path = os.path.join(directory, name)
        live = open(live_path, "rb").read() if os.path.exists(live_path) else None
        assert data in (live, after_quarantine.get(name)), name


@pytest.mark.parametrize("field", sorted(FIELDS))
@pytest.mark.parametrize("index", ["kept", "deleted"])
def test_a_flipped_bit_in_an_older_segment_loses_nothing_and_serves_nothing_corrupt(open_log, field, index):
    log = open_log(**SETTINGS)
    _fill(log)
    paths = _segment_paths(log.directory)
    damaged = paths[2]  # a closed segment with 7 after it
    damaged_base = int(os.path.basename(damaged)[:20])
    starts = _batch_starts(damaged)
    _flip(damaged, starts[1] + FIELDS[field], mask=0x01 if field == "magic" else 0x10)
    before = {os.path.basename(p): open(p, "rb").read() for p in paths}
    if index == "deleted":
        os.unlink(damaged[:-4] + ".index")
    reopened = open_log(**SETTINGS)
    records = _read_everything(reopened)
    # The sound offsets before the damaged batch are all served, each exactly once and unchanged.
    damaged_offset = damaged_base + 2
    assert [r.offset for r in records][:damaged_offset] == list(range(damaged_offset))
    assert [r.value for r in records[:damaged_offset]] == [
        v for i in range(damaged_offset // 2) for v in (b"record-%02d" % i, b"x" * 20)]
    # Everything from the damaged batch on is quarantined, not deleted, and not served.
    assert reopened.log_end_offset == damaged_offset
    assert reopened.damage is not None
    assert (reopened.damage.offset, reopened.damage.held_until) == (damaged_offset, RECORDS)
    _assert_nothing_lost(log.directory, before)
    # The next append continues at the damaged offset (a replica refetches the range there).
    assert reopened.append(values_batch(b"refetched")) == (damaged_offset, damaged_offset)


@pytest.mark.parametrize("cut", ["mid-batch", "zero-length"])
def test_a_truncated_closed_segment_is_quarantined_not_dropped(open_log, cut):
    log = open_log(**SETTINGS)
    _fill(log)
    paths = _segment_paths(log.directory)
    damaged = paths[3]
    damaged_base = int(os.path.basename(damaged)[:20])
    starts = _batch_starts(damaged)
    before = {os.path.basename(p): open(p, "rb").read() for p in paths}
    with open(damaged, "r+b") as f:
        f.truncate(starts[1] + 7 if cut == "mid-batch" else 0)
    reopened = open_log(**SETTINGS)
    lost_from = damaged_base + (2 if cut == "mid-batch" else 0)
    assert reopened.log_end_offset == lost_from
    assert [r.offset for r in read_all(reopened, max_bytes=1)] == list(range(lost_from))
    assert (reopened.damage.offset, reopened.damage.held_until) == (lost_from, RECORDS)
    later = [os.path.basename(p) for p in paths[4:]]
    quarantine = _quarantined(log.directory)
    assert len(quarantine) == 1
    assert set(later) <= set(os.listdir(quarantine[0]))
    for name in later:
        assert open(os.path.join(quarantine[0], name), "rb").read() == before[name]
    record = json.load(open(os.path.join(quarantine[0], DAMAGE_RECORD)))
    assert (record["offset"], record["held_until"], record["repaired_at"]) == (lost_from, RECORDS, None)


def test_damage_stays_reported_across_restarts_until_the_range_is_refetched(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    damaged = _segment_paths(log.directory)[1]
    _flip(damaged, _batch_starts(damaged)[0] + FIELDS["payload"])
    os.unlink(damaged[:-4] + ".index")
    first = open_log(**SETTINGS)
    damage = first.damage
    assert (damage.offset, damage.held_until) == (4, RECORDS)
    first.close()
    second = open_log(**SETTINGS)  # the quarantine is done: nothing new is found, the damage stays
    assert second.damage == damage and second.log_end_offset == 4
    for i in range(2, RECORDS // 2):  # a leader sends the lost range back
        second.append(values_batch(b"again-%02d" % i, b"y"), leader_term=3)
        second.flush()
        assert second.note_if_repaired() == (second.log_end_offset >= RECORDS)
    assert second.damage is None
    second.close()
    third = open_log(**SETTINGS)
    assert third.damage is None
    record = json.load(open(os.path.join(_quarantined(third.directory)[0], DAMAGE_RECORD)))
    assert record["repaired_at"] is not None


def test_a_torn_tail_is_cut_and_is_not_damage(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    last = _segment_paths(log.directory)[-1]
    starts = _batch_starts(last)
    with open(last, "r+b") as f:
        f.truncate(starts[-1] + 9)
    reopened = open_log(**SETTINGS)
    assert reopened.log_end_offset == RECORDS - 2
    assert reopened.damage is None and not _quarantined(log.directory)


def test_a_bad_batch_followed_by_sound_ones_in_the_active_segment_is_damage(open_log):
    log = open_log(segment_bytes=1 << 20, index_interval_bytes=1)
    _fill(log)
    path = _segment_paths(log.directory)[-1]
    starts = _batch_starts(path)
    _flip(path, starts[5] + FIELDS["payload"])  # batch 5 of 20; 14 sound ones follow
    reopened = open_log(segment_bytes=1 << 20, index_interval_bytes=1)
    assert reopened.log_end_offset == 10
    assert (reopened.damage.offset, reopened.damage.held_until) == (10, RECORDS)


def test_a_read_that_finds_damage_quarantines_it_and_readers_in_flight_keep_their_bytes(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    reopened = open_log(**SETTINGS)
    held = reopened.read(20, 1 << 20)  # a reader in flight holds a view of a later segment
    held_bytes = bytes(held)
    damaged = _segment_paths(reopened.directory)[2]
    _flip(damaged, _batch_starts(damaged)[1] + FIELDS["payload"])  # the page cache sees it at once
    # A read from before the damaged batch gets the sound batch ahead of it; one that starts at
    # it raises, naming it.
    assert [b.last_offset for b in iter_batches(reopened.read(8, 1 << 20))] == [9]
    with pytest.raises(CorruptDataError) as caught:
        reopened.read(10, 1 << 20)
    assert caught.value.offset == 10
    damage = reopened.quarantine_damaged(caught.value)
    assert (damage.offset, damage.held_until) == (10, RECORDS)
    assert reopened.log_end_offset == 10
    assert bytes(held) == held_bytes
    assert [r.offset for r in read_all(reopened, max_bytes=1)] == list(range(10))
    assert reopened.append(values_batch(b"next")) == (10, 10)


def test_every_damaged_read_raises_rather_than_serving_bytes(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    reopened = open_log(**SETTINGS)
    damaged = _segment_paths(reopened.directory)[4]
    _flip(damaged, _batch_starts(damaged)[0] + FIELDS["payload"])
    for offset in (16, 17):  # both records of the damaged batch
        with pytest.raises(CorruptDataError):
            reopened.read(offset, 1 << 20)
    # The batches around it are sound and served: the one before, in the segment before, and
    # the one after, in the same segment.
    assert [b.last_offset for b in iter_batches(reopened.read(14, 1 << 20))] == [15]
    assert [b.base_offset for b in iter_batches(reopened.read(18, 1 << 20))] == [18]


def test_the_scrub_finds_damage_open_trusted_and_reads_never_reached(open_log):
    log = open_log(**SETTINGS)
    _fill(log)
    damaged = _segment_paths(log.directory)[6]
    _flip(damaged, _batch_starts(damaged)[1] + FIELDS["payload"])  # the .index is intact: open trusts it
    reopened = open_log(**SETTINGS)
    assert reopened.damage is None and reopened.log_end_offset == RECORDS
    checked = 0
    with pytest.raises(CorruptDataError) as caught:
        for _ in range(100):  # a few bytes per call, as a busy broker's share would be
            checked += reopened.scrub(50)
    assert caught.value.offset == 26 and caught.value.path == damaged
    assert checked > 0


def test_the_scrub_goes_round_a_sound_log_and_follows_retention_and_rolls(open_log, clock):
    log = open_log(**SETTINGS)
    _fill(log)
    reopened = open_log(**SETTINGS, retention_bytes=1200)
    total = sum(s.size_bytes for s in reopened.segments[:-1])
    assert sum(reopened.scrub(100) for _ in range(200)) > 2 * total  # round and round, nothing found
    assert reopened.apply_retention() > 0  # the segment being scrubbed may go: the scrub moves on
    for i in range(10):
        reopened.append(values_batch(b"more-%02d" % i, b"z" * 20), leader_term=3)
        assert reopened.scrub(100) >= 0
    assert sum(reopened.scrub(1 << 20) for _ in range(20)) > 0

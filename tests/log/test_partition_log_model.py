"""PartitionLog against a list model: random appends (leader and follower), truncations,
resets, reopens and retention at tiny segment sizes must always read back like the model."""

import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from distlog.log.batch import RecordBatch, stamp_batch
from distlog.log.batch_builder import build_batch
from distlog.log.config import LogConfig
from distlog.log.partition_log import PartitionLog
from distlog.log.records import record_at
from tests.log.helpers import FakeClock, read_all

CONFIG = LogConfig(segment_bytes=260, index_interval_bytes=90, retention_ms=1000)


class PartitionLogModel(RuleBasedStateMachine):
    """model: one (value, term, timestamp_ms) per offset from model_start."""

    @initialize()
    def open_empty(self):
        self.directory = tempfile.mkdtemp(prefix="distlog-model-")
        self.clock = FakeClock(0)
        self.log = PartitionLog.open(self.directory, CONFIG, clock_ms=self.clock)
        self.model_start = 0
        self.model = []
        self.batch_bases = []  # base offsets of the batches in the model, for truncation

    def teardown(self):
        self.log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    @rule(values=st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=4), term=st.integers(1, 5),
          follower=st.booleans())
    def append(self, values, term, follower):
        end = self.model_start + len(self.model)
        batch = bytearray(build_batch(values, timestamps_ms=[self.clock.now_ms] * len(values)))
        if follower:
            stamp_batch(batch, end, term)
            result = self.log.append(batch, assign_offsets=False)
        else:
            result = self.log.append(batch, leader_term=term)
        assert result == (end, end + len(values) - 1)
        self.batch_bases.append(end)
        self.model.extend((value, term, self.clock.now_ms) for value in values)
        self.clock.advance(100)

    @precondition(lambda self: self.batch_bases)
    @rule(data=st.data())
    def truncate(self, data):
        base = data.draw(st.sampled_from(self.batch_bases))
        self.log.truncate_to(base)
        del self.model[base - self.model_start :]
        self.batch_bases = [b for b in self.batch_bases if b < base]

    @rule(offset=st.integers(0, 50))
    def reset(self, offset):
        self.log.reset_to(offset)
        self.model_start, self.model, self.batch_bases = offset, [], []

    @rule()
    def reopen(self):
        self.log.close()
        self.log = PartitionLog.open(self.directory, CONFIG, clock_ms=self.clock)

    @rule()
    def retention(self):
        self.log.apply_retention()
        dropped = self.log.log_start_offset - self.model_start
        assert dropped >= 0
        for value, _, timestamp_ms in self.model[:dropped]:
            assert timestamp_ms < self.clock.now_ms - CONFIG.retention_ms
        del self.model[:dropped]
        self.model_start = self.log.log_start_offset
        self.batch_bases = [b for b in self.batch_bases if b >= self.model_start]

    @invariant()
    def reads_match_the_model(self):
        assert self.log.log_start_offset == self.model_start
        assert self.log.log_end_offset == self.model_start + len(self.model)
        records = read_all(self.log, max_bytes=1)
        assert [r.offset for r in records] == list(range(self.model_start, self.log.log_end_offset))
        assert [r.value for r in records] == [value for value, _, _ in self.model]
        assert self.log.last_term == (self.model[-1][1] if self.model else 0)
        for offset in range(self.model_start, self.log.log_end_offset, 3):
            assert self.log.batch_header_at(offset).leader_term == self.model[offset - self.model_start][1]
            stored = record_at(RecordBatch(self.log.read(offset, 1)), offset)
            assert stored.value == self.model[offset - self.model_start][0]


PartitionLogModel.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
test_partition_log_matches_the_model = PartitionLogModel.TestCase

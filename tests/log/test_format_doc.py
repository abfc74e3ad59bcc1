"""docs/FORMAT.md's worked example is the exact output of the code."""

import pathlib
import re

from distlog.log.batch import RecordBatch
from distlog.log.batch_builder import build_batch

FORMAT_MD = pathlib.Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


def test_the_documented_hex_dump_is_what_build_batch_produces():
    dump = re.search(r"```hex\n(.*?)```", FORMAT_MD.read_text(), re.S).group(1)
    documented = bytes.fromhex("".join(line.split(":", 1)[1] for line in dump.strip().splitlines()))
    built = build_batch(
        [b"hello", None], [b"k1", None], [1700000000000, 1700000000005], [[("trace", b"\x01")], None],
        base_offset=42, leader_term=3, producer_id=9, producer_epoch=1, base_sequence=0,
    )
    assert documented == built
    RecordBatch(documented).verify()

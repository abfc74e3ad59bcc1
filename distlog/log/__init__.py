"""distlog.log: the storage engine — record batches, segments, indexes, partition logs."""

from distlog.log.batch import (
    HEADER_SIZE,
    MAGIC,
    RECORD_DTYPE,
    BatchArrays,
    BatchHeader,
    CorruptBatchError,
    RecordBatch,
    iter_batches,
    peek_header,
    stamp_batch,
)
from distlog.log.batch_builder import build_batch, build_batch_from_arrays
from distlog.log.config import LogConfig
from distlog.log.errors import (
    CorruptSegmentNameError,
    LogError,
    LogFlushFailedError,
    NotAPartitionLogError,
    OffsetOutOfRangeError,
    ReadOnlyLogError,
    RecordTooLargeError,
    StorageError,
)
from distlog.log.partition_log import PartitionLog
from distlog.log.records import Record, batch_records, decode_records, record_at

__all__ = [
    "HEADER_SIZE", "MAGIC", "RECORD_DTYPE", "BatchArrays", "BatchHeader", "CorruptBatchError", "Record",
    "RecordBatch", "batch_records", "build_batch", "build_batch_from_arrays", "decode_records", "iter_batches",
    "peek_header", "record_at", "stamp_batch", "LogConfig", "CorruptSegmentNameError", "LogError",
    "LogFlushFailedError", "NotAPartitionLogError", "OffsetOutOfRangeError", "ReadOnlyLogError", "RecordTooLargeError", "StorageError",
    "PartitionLog",
]

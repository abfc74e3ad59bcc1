"""distlog.log: the storage engine — record batches, segments, indexes, partition logs."""

from distlog.log.batch import (
    HEADER_SIZE,
    MAGIC,
    RECORD_DTYPE,
    BatchArrays,
    BatchHeader,
    CorruptBatchError,
    Record,
    RecordBatch,
    build_batch,
    build_batch_from_arrays,
    decode_records,
    iter_batches,
    peek_header,
    stamp_batch,
)
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

__all__ = [
    "HEADER_SIZE", "MAGIC", "RECORD_DTYPE", "BatchArrays", "BatchHeader", "CorruptBatchError", "Record",
    "RecordBatch", "build_batch", "build_batch_from_arrays", "decode_records", "iter_batches", "peek_header",
    "stamp_batch", "LogConfig", "CorruptSegmentNameError", "LogError", "LogFlushFailedError",
    "NotAPartitionLogError", "OffsetOutOfRangeError", "ReadOnlyLogError", "RecordTooLargeError", "StorageError",
    "PartitionLog",
]

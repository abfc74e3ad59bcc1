"""distlog.client: the ZeroMQ client library — Producer, Consumer, Admin."""

from distlog.client.accumulator import RecordMetadata
from distlog.client.admin import Admin
from distlog.client.bootstrap import ClusterNotFoundError, local_bootstrap
from distlog.client.consumer import Consumer, ConsumerRecord, TopicPartition
from distlog.client.errors import BufferFullError, DistlogError, ErrorCode, RequestTimedOutError
from distlog.client.group import CommitFailedError, GroupError
from distlog.client.producer import Producer

__all__ = [
    "Admin",
    "BufferFullError",
    "ClusterNotFoundError",
    "CommitFailedError",
    "Consumer",
    "ConsumerRecord",
    "DistlogError",
    "ErrorCode",
    "GroupError",
    "Producer",
    "RecordMetadata",
    "RequestTimedOutError",
    "TopicPartition",
    "local_bootstrap",
]

"""Admin's controller retries: a create retried after NOT_CONTROLLER that finds its own earlier
attempt kept succeeds (a partition increase and a delete too); any other refusal is still an error. Stub cluster, no sockets."""

import pytest

from distlog.client.admin import Admin
from distlog.client.cluster import TopicInfo
from distlog.protocol.errors import DistlogError, ErrorCode
from distlog.protocol.messages import CreateTopicsResponse, MetadataRequest, MetadataResponse


def answer(code: ErrorCode) -> CreateTopicsResponse:
    return CreateTopicsResponse([{"name": "t", "error_code": int(code), "error_message": code.name}])


class StubCluster:
    """Answers each topic change with the next scripted response; the controller's metadata
    holds `existing` (the topic as it is) and no other broker is asked about it."""

    controller_id = 1

    def __init__(self, answers, existing=None):
        self.answers = list(answers)
        self.existing = existing
        self.topics = {}
        self.controller_asked = 0

    def responsive_connection(self, timeout_s):
        return self

    def broker_connection(self, broker_id):
        assert broker_id == self.controller_id, "the retry check asks the controller"
        return self

    def request(self, request, timeout_s):
        if isinstance(request, MetadataRequest):
            self.controller_asked += 1
            return MetadataResponse([], self.controller_id, [self._metadata(name) for name in request.topics])
        return self.answers.pop(0)

    def _metadata(self, name):
        if self.existing is None:
            return {"name": name, "error_code": int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), "error_message": "",
                    "configs": {}, "partitions": []}
        partitions = [{"partition": p, "replicas": replicas} for p, replicas in enumerate(self.existing.replicas)]
        return {"name": name, "error_code": 0, "error_message": "", "configs": {}, "partitions": partitions}

    def refresh(self, topics=None, timeout_s=None):
        pass


def admin_over(cluster) -> Admin:
    admin = Admin.__new__(Admin)
    admin.cluster, admin.request_timeout_s = cluster, 5.0
    return admin


def topic(partitions, replication_factor):
    replicas = [list(range(1, replication_factor + 1))] * partitions
    return TopicInfo("t", [1] * partitions, replicas, replicas, {})


def test_a_retried_create_that_finds_its_own_earlier_attempt_succeeds():
    cluster = StubCluster([answer(ErrorCode.NOT_CONTROLLER), answer(ErrorCode.TOPIC_ALREADY_EXISTS)], topic(3, 3))
    admin_over(cluster).create_topic("t", partitions=3, replication_factor=3)
    assert cluster.answers == [], "it asked twice"


def test_a_retried_create_that_finds_a_different_topic_fails():
    cluster = StubCluster([answer(ErrorCode.NOT_CONTROLLER), answer(ErrorCode.TOPIC_ALREADY_EXISTS)], topic(6, 3))
    with pytest.raises(DistlogError) as caught:
        admin_over(cluster).create_topic("t", partitions=3, replication_factor=3)
    assert caught.value.code == ErrorCode.TOPIC_ALREADY_EXISTS


def test_a_topic_that_existed_before_the_first_attempt_is_an_error():
    cluster = StubCluster([answer(ErrorCode.TOPIC_ALREADY_EXISTS)], topic(3, 3))
    with pytest.raises(DistlogError) as caught:
        admin_over(cluster).create_topic("t", partitions=3, replication_factor=3)
    assert caught.value.code == ErrorCode.TOPIC_ALREADY_EXISTS


def test_a_retried_create_the_controller_does_not_know_fails_after_looking_again():
    cluster = StubCluster([answer(ErrorCode.NOT_CONTROLLER), answer(ErrorCode.TOPIC_ALREADY_EXISTS)], None)
    with pytest.raises(DistlogError) as caught:
        admin_over(cluster).create_topic("t", partitions=3, replication_factor=3)
    assert caught.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
    assert cluster.controller_asked > 1, "a controller that is catching up is asked again"


def test_a_retried_partition_increase_that_finds_its_own_earlier_attempt_succeeds():
    cluster = StubCluster([answer(ErrorCode.NOT_CONTROLLER), answer(ErrorCode.INVALID_PARTITIONS)], topic(6, 3))
    admin_over(cluster).create_partitions("t", 6)
    assert cluster.answers == [], "it asked twice"


@pytest.mark.parametrize("answers", [
    [answer(ErrorCode.NOT_CONTROLLER), answer(ErrorCode.INVALID_PARTITIONS)],  # grown further by someone else
    [answer(ErrorCode.INVALID_PARTITIONS)],  # refused the first time: not this request's doing
])
def test_a_partition_increase_refused_otherwise_is_an_error(answers):
    cluster = StubCluster(answers, topic(8, 3))
    with pytest.raises(DistlogError) as caught:
        admin_over(cluster).create_partitions("t", 6)
    assert caught.value.code == ErrorCode.INVALID_PARTITIONS


def test_a_retried_delete_that_finds_the_topic_gone_succeeds():
    # The fresh-clone CI caught this: the controller moved while the first delete was being
    # committed, the retry was told the topic does not exist, and `topic delete` failed.
    cluster = StubCluster([answer(ErrorCode.NOT_CONTROLLER), answer(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)], None)
    admin_over(cluster).delete_topic("t")
    assert cluster.answers == [], "it asked twice"


def test_deleting_a_topic_that_never_existed_is_an_error():
    cluster = StubCluster([answer(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)], None)
    with pytest.raises(DistlogError) as caught:
        admin_over(cluster).delete_topic("t")
    assert caught.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

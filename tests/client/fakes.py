"""Stand-ins for driving the producer's sender without a broker."""

ENDPOINT = "tcp://127.0.0.1:1"


class OneLeaderCluster:
    """Every partition's leader is ENDPOINT, reached through the one connection given."""

    def __init__(self, connection):
        self._connection = connection
        self.topics = {}  # the sender drops entries here to force a leader lookup

    def leader_endpoint(self, topic, partition):
        return ENDPOINT

    def connection(self, endpoint):
        return self._connection

    def close(self):
        pass

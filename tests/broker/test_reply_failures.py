"""A reply the socket refuses is lost, the broker is not: the next request is answered."""

from distlog.client.probe import ping
from distlog.transports.zmq_transport import TransportError
from tests.broker.helpers import running_brokers


def test_a_transport_error_on_a_reply_does_not_stop_the_broker(tmp_path):
    with running_brokers(str(tmp_path), 1) as (brokers, threads):
        broker, address = brokers[0], brokers[0].config.listen
        assert ping(address, 5) is not None
        real_send, failures = broker.server.send, []

        def failing_once(peer, cid, frames):
            if not failures:
                failures.append(cid)
                raise TransportError("send on test socket failed: Interrupted system call")
            return real_send(peer, cid, frames)

        broker.server.send = failing_once
        assert ping(address, 0.5) is None, "the failed reply must not arrive"
        assert failures and threads[0].is_alive()
        assert ping(address, 5) is not None

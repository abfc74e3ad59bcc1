"""Error messages: a generic hint only where the message gives no advice of its own."""

from distlog.client.errors import ProducerClosedError
from distlog.protocol.errors import DistlogError, ErrorCode


def test_a_message_with_its_own_advice_gets_no_second_hint():
    error = DistlogError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "topic 'x' does not exist (create it with `distlog topic create x`)")
    assert str(error) == "UNKNOWN_TOPIC_OR_PARTITION: topic 'x' does not exist (create it with `distlog topic create x`)"


def test_a_bare_code_or_a_plain_message_gets_the_generic_hint():
    assert "check `distlog cluster status`" in str(DistlogError(ErrorCode.BROKER_NOT_AVAILABLE))
    assert str(DistlogError(ErrorCode.STORAGE_ERROR, "disk full")).endswith("(the broker could not write to disk (full or failing?); check its log)")


def test_sending_after_close_is_not_called_a_client_bug():
    text = str(ProducerClosedError())
    assert "closed" in text and "client bug" not in text and "malformed" not in text


def test_an_invalid_request_is_not_called_a_client_bug():
    """Brokers answer INVALID_REQUEST to what a user asked for (a broker not in the cluster, a
    session timeout out of range): the hint must not blame the client library."""
    text = str(DistlogError(ErrorCode.INVALID_REQUEST, "broker 9 is not a broker of this cluster"))
    assert "broker 9" in text and "client bug" not in text

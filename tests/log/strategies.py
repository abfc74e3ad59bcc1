"""Hypothesis strategies for record batches: lists of records with nulls, headers and
timestamps, shaped as build_batch takes them."""

from hypothesis import strategies as st

maybe_bytes = st.one_of(st.none(), st.binary(max_size=40))
header_lists = st.one_of(
    st.none(), st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=3)
)


@st.composite
def record_lists(draw):
    n = draw(st.integers(min_value=1, max_value=20))
    values = draw(st.lists(maybe_bytes, min_size=n, max_size=n))
    keys = draw(st.one_of(st.none(), st.lists(maybe_bytes, min_size=n, max_size=n)))
    timestamps = draw(st.lists(st.integers(min_value=0, max_value=2**45), min_size=n, max_size=n))
    headers = draw(st.one_of(st.none(), st.lists(header_lists, min_size=n, max_size=n)))
    return values, keys, timestamps, headers

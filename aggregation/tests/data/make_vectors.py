#!/usr/bin/env python3
"""Cross-check vectors between our KPL aggregation code and AWS's Python library.

Tests never run this script (CI has no Python); they read the files it wrote, which are
committed next to it. Rerun it only to regenerate them, in a throw-away virtualenv:

    python3 -m venv /tmp/aggvenv
    /tmp/aggvenv/bin/pip install aws_kinesis_agg six
    /tmp/aggvenv/bin/python kpl/tests/data/make_vectors.py python
        # (a) writes python_aggregates.txt: aggregates the Python library makes from known
        #     inputs; record_interop.rs checks that we decode them exactly and that our encoder
        #     produces the same bytes from the same inputs.
    KPL_WRITE_INTEROP_VECTORS=1 cargo test -p kinesis-kpl --test record_interop
        # writes rust_aggregates.txt: aggregates made by OUR encoder (if they changed, the test
        # then fails on Python's stale verdict until the next step has been run).
    /tmp/aggvenv/bin/python kpl/tests/data/make_vectors.py rust
        # (b) writes rust_aggregates_python_decoded.txt: what the Python library reads out of
        #     them. record_interop.rs checks that our encoder still makes exactly those bytes, so
        #     the Python verification stays valid, and that Python read back what went in.

We match the format, not the Python library's bugs. Those we know of (aws_kinesis_agg 1.2.3):
  * Its size accounting looks keys up as bytes in a table of str, so on Python 3 every key counts
    as new: it over-estimates and under-fills aggregates.
  * RecordAggregator.add_user_record silently drops a record whose size is within max_size but
    whose framed size (plus magic and MD5) is not: it fails to fit even a fresh aggregate and the
    failure is ignored.
  * It drops an explicit hash key that is the empty string.
  * Its deaggregator gives a record without an explicit hash key the first entry of the explicit
    hash key table when the table is not empty (it never looks at whether the index is set).
The inputs below avoid the third; the Rust test allows for the fourth.

File format, one item a line: `vector NAME`, `record PK EHK DATA` (input records),
`aggregate BYTES`, `aggregate_md5 BYTES`, `decoded PK EHK DATA SUBSEQ` (Python's output), `end`. Values are `h:` followed
by lowercase hex (`h:` alone is empty); an absent explicit hash key is `none`. `#` starts a comment.
"""

import base64
import hashlib
import os
import random
import sys

from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_FILE = os.path.join(HERE, "python_aggregates.txt")
RUST_FILE = os.path.join(HERE, "rust_aggregates.txt")
RUST_DECODED_FILE = os.path.join(HERE, "rust_aggregates_python_decoded.txt")

MAX_HASH_KEY = str(2**128 - 1)


def h(value):
    if value is None:
        return "none"
    if isinstance(value, str):
        value = value.encode("utf-8")
    return "h:" + value.hex()


def unh(token):
    if token == "none":
        return None
    assert token.startswith("h:"), token
    return bytes.fromhex(token[2:])


def data(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def pattern(seed, n):
    """Low-entropy data for big records, so the committed files compress well in git."""
    return bytes((seed + i * 7) % 256 for i in range(n))


def python_cases():
    """(name, [(pk, ehk or None, data)]) inputs for the Python aggregator."""
    rng = random.Random(20240607)
    cases = []
    cases.append(("single_record", [("only-key", None, b"hello, world")]))
    cases.append(("distinct_keys", [("pk-%d" % i, None, data(rng, 10 + i)) for i in range(5)]))
    cases.append(("repeated_keys", [(pk, None, data(rng, 8)) for pk in "a b a c b a c c".split()]))
    cases.append(("explicit_hash_keys", [
        ("pk-1", "0", b"zero"),
        ("pk-2", MAX_HASH_KEY, b"max"),
        ("pk-1", "170141183460469231731687303715884105728", b"middle"),
        ("pk-3", "0", b"zero again"),
    ]))
    cases.append(("mixed_explicit_hash_keys", [
        ("pk-1", None, b"no ehk"),
        ("pk-2", "12345", b"ehk"),
        ("pk-1", None, b"no ehk again"),
        ("pk-3", "67890", b"other ehk"),
        ("pk-2", "12345", b"ehk again"),
    ]))
    cases.append(("empty_data", [("pk-a", None, b""), ("pk-b", None, b""), ("pk-a", "1", b"")]))
    cases.append(("empty_partition_key", [("", None, b"x"), ("k", None, b"y"), ("", None, b"z")]))
    cases.append(("unicode_keys", [
        ("clé-é", None, "données".encode("utf-8")),
        ("ключ", None, b"\x00\xff"),
        ("鍵🔑", None, b"emoji"),
        ("clé-é", None, b"again"),
    ]))
    cases.append(("many_records", [
        ("key-%03d" % (i % 200), str(i * 7919) if i % 5 == 0 else None, data(rng, i % 40))
        for i in range(300)
    ]))
    cases.append(("varint_boundaries", [
        ("b-%d" % n, None, pattern(n, n)) for n in (127, 128, 16383, 16384)
    ]))
    cases.append(("large_record", [("big", None, pattern(1, 20000)), ("small", None, b"s")]))
    return cases


def aggregate_with_agg_record(records):
    agg = AggRecord()
    for pk, ehk, payload in records:
        assert agg.add_user_record(pk, payload, ehk), "record did not fit"
    return agg.get_contents()[2]


def filled_by_record_aggregator():
    """What RecordAggregator hands out when 100-byte records fill a 51 200-byte aggregate."""
    aggregator = RecordAggregator(max_size=51200)
    inputs = []
    for i in range(10000):
        pk = "%020d" % (i * 1000003)
        record = (pk, None, pattern(i, 100))
        full = aggregator.add_user_record(record[0], record[2])
        if full is not None:
            return inputs, full.get_contents()[2]
        inputs.append(record)
    raise AssertionError("aggregator never filled")


def write_vector(out, name, records, aggregate=None, aggregate_md5=None, decoded=()):
    out.write("vector %s\n" % name)
    for pk, ehk, payload in records:
        out.write("record %s %s %s\n" % (h(pk), h(ehk), h(payload)))
    if aggregate is not None:
        out.write("aggregate %s\n" % h(aggregate))
    if aggregate_md5 is not None:
        out.write("aggregate_md5 %s\n" % h(aggregate_md5))
    for pk, ehk, payload, subseq in decoded:
        out.write("decoded %s %s %s %d\n" % (h(pk), h(ehk), h(payload), subseq))
    out.write("end\n")


def python_main():
    with open(PYTHON_FILE, "w") as out:
        out.write("# (a) Aggregates made by aws_kinesis_agg from known inputs. Generated by\n")
        out.write("# make_vectors.py; do not edit.\n")
        for name, records in python_cases():
            write_vector(out, name, records, aggregate_with_agg_record(records))
        inputs, aggregate = filled_by_record_aggregator()
        write_vector(out, "record_aggregator_filled_51200", inputs, aggregate)
    print("wrote", PYTHON_FILE)


def read_vectors(path):
    vectors = []
    current = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kind, _, rest = line.partition(" ")
            if kind == "vector":
                current = {"name": rest, "records": [], "aggregate": None}
            elif kind == "record":
                pk, ehk, payload = rest.split(" ")
                current["records"].append((unh(pk), unh(ehk), unh(payload)))
            elif kind == "aggregate":
                current["aggregate"] = unh(rest)
            elif kind == "end":
                vectors.append(current)
                current = None
            else:
                raise ValueError("unexpected line: %r" % line)
    return vectors


def python_deaggregate(aggregate):
    boto3_style = {
        "Data": aggregate,
        "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
        "PartitionKey": "outer",
        "ApproximateArrivalTimestamp": 0,
    }
    decoded = []
    for user_record in iter_deaggregate_records([boto3_style], data_format="Boto3"):
        kinesis = user_record["kinesis"]
        assert kinesis.get("aggregated") is True, "Python did not see an aggregate"
        ehk = kinesis["explicitHashKey"]
        decoded.append((
            kinesis["partitionKey"],
            ehk,
            base64.b64decode(kinesis["data"]),
            kinesis["subSequenceNumber"],
        ))
    return decoded


def rust_main():
    vectors = read_vectors(RUST_FILE)
    with open(RUST_DECODED_FILE, "w") as out:
        out.write("# (b) What aws_kinesis_agg's deaggregator reads out of rust_aggregates.txt (our\n")
        out.write("# encoder's output), one vector per aggregate in the same order, with the MD5 of\n")
        out.write("# the aggregate it read. Generated by make_vectors.py; do not edit.\n")
        for vector in vectors:
            decoded = python_deaggregate(vector["aggregate"])
            assert len(decoded) == len(vector["records"]), vector["name"]
            digest = hashlib.md5(vector["aggregate"]).digest()
            write_vector(out, vector["name"], [], aggregate_md5=digest, decoded=decoded)
    print("wrote", RUST_DECODED_FILE)


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "python":
        python_main()
    elif command == "rust":
        rust_main()
    else:
        sys.exit("usage: make_vectors.py python|rust")

#!/usr/bin/env python3
"""Encode rate of Python aws-kinesis-agg on the Rust benchmark's workload, for comparison.

Workload (same as crates/kinesis-aggregation/benches/aggregation.rs): 20,000 user records,
100-byte data, 16-byte partition keys (all distinct, or 16 shared), aggregates up to 51200
bytes. Timed: adding every record (RecordAggregator.add_user_record, which deep-copies a
full aggregate when it returns it) plus get_contents() (protobuf serialization + MD5) of
every aggregate; the same for deaggregation with iter_deaggregate_records. The last stdout
line is `BENCH_JSON {...}`: the same figures for `cargo xtask bench`.

Run: bash scripts/aggregation/setup-venvs.sh agg &&
     .cache/py/agg/bin/python scripts/aggregation/bench_python.py
"""

import json
import os
import sys
import time

import aws_kinesis_agg

sys.path.insert(0, os.path.dirname(aws_kinesis_agg.__file__))
from aws_kinesis_agg.aggregator import RecordAggregator  # noqa: E402
from aws_kinesis_agg.deaggregator import iter_deaggregate_records  # noqa: E402

RECORDS = 20_000
DATA_LEN = 100
MUL = 0x9E3779B97F4A7C15


def workload(distinct):
    pool = bytes((i * 31 % 251) for i in range(RECORDS * DATA_LEN))
    return [
        ("%016x" % (((i % distinct) * MUL) & 0xFFFFFFFFFFFFFFFF), pool[i * DATA_LEN:(i + 1) * DATA_LEN])
        for i in range(RECORDS)
    ]


def encode(records):
    agg = RecordAggregator(max_size=51200)
    out = []
    for pk, data in records:
        full = agg.add_user_record(pk, data)
        if full is not None:
            out.append(full.get_contents())
    last = agg.clear_and_get()
    if last is not None:
        out.append(last.get_contents())
    return out


def best_of(n, f, *args):
    best = float("inf")
    result = None
    for _ in range(n):
        t = time.perf_counter()
        result = f(*args)
        best = min(best, time.perf_counter() - t)
    return best, result


def main():
    from importlib.metadata import version

    versions = {
        "aws-kinesis-agg": version("aws-kinesis-agg"),
        "protobuf": version("protobuf"),
        "python": sys.version.split()[0],
    }
    print("aws-kinesis-agg %(aws-kinesis-agg)s, protobuf %(protobuf)s, Python %(python)s" % versions)
    results = {}
    for name, distinct in [("distinct_keys", RECORDS), ("16_keys", 16)]:
        records = workload(distinct)
        secs, aggregates = best_of(5, encode, records)
        boto3 = [
            {"SequenceNumber": str(i), "PartitionKey": pk, "ApproximateArrivalTimestamp": 0, "Data": data}
            for i, (pk, _ehk, data) in enumerate(aggregates)
        ]
        dsecs, _ = best_of(5, lambda: sum(1 for _ in iter_deaggregate_records(boto3, data_format="Boto3")))
        print(
            "%-14s %d aggregates; encode %.3f s = %.0f records/s; decode %.3f s = %.0f records/s (best of 5)"
            % (name, len(aggregates), secs, RECORDS / secs, dsecs, RECORDS / dsecs)
        )
        results[name] = {
            "aggregates": len(aggregates),
            "encode_records_per_s": RECORDS / secs,
            "decode_records_per_s": RECORDS / dsecs,
        }
    report = {"peer": "aws-kinesis-agg (PyPI)", "versions": versions, "records": RECORDS, "repeats": 5,
              "results": results}
    print("BENCH_JSON " + json.dumps(report))


if __name__ == "__main__":
    main()

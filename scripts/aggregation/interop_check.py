#!/usr/bin/env python3
"""Decodes aggregates written by kinesis-aggregation with Python aws-kinesis-agg 1.2.3 and
checks every user record. Usage: interop_check.py IN.json. Exit status 1 on any mismatch.

Checks per Kinesis record:
  - aws_kinesis_agg.deaggregator.iter_deaggregate_records (its public API) yields the user
    records in order: partition key, data, sub-sequence number, aggregated flag;
  - for aggregates: partition key "a" and explicit hash key = the first user record's
    hash key (its explicit hash key, else MD5(partition key) as a big-endian integer),
    computed here independently;
  - explicit hash keys per user record, read through aws-kinesis-agg's generated protobuf
    module (its deaggregator reports table entry 0 for records that have none when the
    table is non-empty, a bug of aws-kinesis-agg, so the public API cannot check absence).
"""

import base64
import datetime
import hashlib
import json
import sys

import os

import aws_kinesis_agg

# aws-kinesis-agg's generated modules import each other as top-level modules (its own
# modules put their directory on sys.path the same way before importing them).
sys.path.insert(0, os.path.dirname(aws_kinesis_agg.__file__))
from aws_kinesis_agg import messages_pb2  # noqa: E402
from aws_kinesis_agg.deaggregator import iter_deaggregate_records  # noqa: E402


def hash_key(pk, ehk):
    if ehk is not None:
        return int(ehk)
    return int.from_bytes(hashlib.md5(pk.encode("utf-8")).digest(), "big")


def check(index, kr, failures):
    data = base64.b64decode(kr["data"])
    users = kr["user_records"]
    where = "kinesis record #%d (%d user records)" % (index, len(users))
    aggregated = len(users) > 1

    def fail(msg):
        failures.append("%s: %s" % (where, msg))

    if aggregated:
        if kr["partition_key"] != "a":
            fail("aggregate partition key %r, want 'a'" % kr["partition_key"])
        want = str(hash_key(users[0]["partition_key"], users[0]["explicit_hash_key"]))
        if kr["explicit_hash_key"] != want:
            fail("aggregate explicit hash key %s, want %s" % (kr["explicit_hash_key"], want))
    else:
        u = users[0]
        if (kr["partition_key"], kr["explicit_hash_key"]) != (u["partition_key"], u["explicit_hash_key"]):
            fail("single record keys differ from the user record's")

    boto3_record = {
        "SequenceNumber": str(index),
        "PartitionKey": kr["partition_key"],
        "ApproximateArrivalTimestamp": datetime.datetime(2026, 1, 1),
        "Data": data,
    }
    out = list(iter_deaggregate_records([boto3_record], data_format="Boto3"))
    if len(out) != len(users):
        fail("decoded %d records, want %d" % (len(out), len(users)))
        return
    for i, (o, u) in enumerate(zip(out, users)):
        k = o["kinesis"]
        got_data = base64.b64decode(k["data"]) if aggregated else k["data"]
        if got_data != base64.b64decode(u["data"]):
            fail("#%d data differs" % i)
        if k["partitionKey"] != u["partition_key"]:
            fail("#%d partition key %r, want %r" % (i, k["partitionKey"], u["partition_key"]))
        if aggregated:
            if k.get("subSequenceNumber") != i or k.get("aggregated") is not True:
                fail("#%d sub-sequence %r / aggregated %r" % (i, k.get("subSequenceNumber"), k.get("aggregated")))
            if u["explicit_hash_key"] is not None and k["explicitHashKey"] != u["explicit_hash_key"]:
                fail("#%d explicit hash key %r, want %r" % (i, k["explicitHashKey"], u["explicit_hash_key"]))

    if aggregated:
        body = data[len(aws_kinesis_agg.MAGIC):-aws_kinesis_agg.DIGEST_SIZE]
        ar = messages_pb2.AggregatedRecord()
        ar.ParseFromString(body)
        for i, (mr, u) in enumerate(zip(ar.records, users)):
            has = mr.HasField("explicit_hash_key_index")
            got = ar.explicit_hash_key_table[mr.explicit_hash_key_index] if has else None
            if got != u["explicit_hash_key"]:
                fail("#%d protobuf explicit hash key %r, want %r" % (i, got, u["explicit_hash_key"]))
        if len(set(ar.partition_key_table)) != len(ar.partition_key_table):
            fail("partition key table has duplicates")
        if len(set(ar.explicit_hash_key_table)) != len(ar.explicit_hash_key_table):
            fail("explicit hash key table has duplicates")


def main():
    doc = json.load(open(sys.argv[1], encoding="utf-8"))
    records = doc["kinesis_records"]
    passed = failed = users = 0
    for i, kr in enumerate(records):
        failures = []
        try:
            check(i, kr, failures)
        except Exception as e:  # a crash in the peer is a failure too
            failures.append("kinesis record #%d: %s: %s" % (i, type(e).__name__, e))
        users += len(kr["user_records"])
        if failures:
            failed += 1
            for f in failures[:5]:
                print("FAIL", f)
        else:
            passed += 1
    print(
        "aws-kinesis-agg interop: %d passed, %d failed (Kinesis records; %d user records)"
        % (passed, failed, users)
    )
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Regenerates the golden fixtures of crates/kinesis-aggregation/tests/fixtures/.

Each fixture file holds cases produced by one Python peer of the KPL format:
  aws-kinesis-agg.json  PyPI aws-kinesis-agg 1.2.3 (RecordAggregator)
  aiokpl.json           PyPI aiokpl 0.2.0 (encode_aggregated + AggregatedBatch routing:
                        the code path its producer uses, without talking to Kinesis)

A case is: the input user records, the Kinesis records the peer produced from them (what
it would put: partition key, explicit hash key, data), the byte limit used, and whether
our encoder is expected to produce the same bytes (see `note`). Data is base64.

Run from anywhere (no arguments): it creates the venvs if needed
(scripts/aggregation/setup-venvs.sh) and re-runs itself under each venv's Python.
The inputs are deterministic, so the output is stable (MD5 included).
"""

import base64
import json
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "crates", "kinesis-aggregation", "tests", "fixtures")
U128_MAX = (1 << 128) - 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rec(pk, data, ehk=None, tags=None):
    r = {"partition_key": pk, "explicit_hash_key": ehk, "data": data}
    if tags:
        r["tags"] = tags
    return r


def input_sets():
    """The record sets both peers encode. Deterministic."""
    sets = {}
    sets["distinct_keys"] = [rec("key-%d" % i, b"data-%d" % i) for i in range(3)]
    sets["repeated_keys"] = [rec("k%d" % (i % 3), bytes([i]) * (i % 5)) for i in range(12)]
    sets["unicode_keys"] = [
        rec("ключ", "данные".encode()),
        rec("鍵" * 256, b"\x00\xff"),  # 256 chars, 768 bytes: the longest key allowed
        rec("😀" * 200, b"emoji"),
        rec("ключ", b"again"),
    ]
    sets["explicit_hash_keys"] = [
        rec("a", b"1", "0"),
        rec("b", b"2"),
        rec("c", b"3", str(U128_MAX)),
        rec("d", b"4", "0"),
        rec("e", b"5", "170141183460469231731687303715884105728"),
    ]
    sets["empty_data"] = [rec("k", b""), rec("k", b""), rec("l", b"")]
    # > 127 keys and data > 127 bytes: two-byte varints for indices and lengths.
    sets["many_records"] = [
        rec("pk-%04d" % i, bytes((i * 7 + j) % 256 for j in range(i % 150))) for i in range(200)
    ]
    sets["single_record"] = [rec("only", b"alone")]
    sets["single_record_ehk"] = [rec("only", b"alone", "12345")]
    return sets


def cut_set():
    """Records for a run through a byte limit: several aggregates, cut where the next
    record would not fit."""
    return [rec("user-%d" % (i % 5), bytes([i % 256]) * (50 + i % 90)) for i in range(120)]


def as_json_records(records):
    return [
        {
            "partition_key": r["partition_key"],
            "explicit_hash_key": r["explicit_hash_key"],
            "data": b64(r["data"]),
            **({"tags": r["tags"]} if r.get("tags") else {}),
        }
        for r in records
    ]


# ─── aws-kinesis-agg ────────────────────────────────────────────────────────


def run_aws_kinesis_agg():
    from aws_kinesis_agg.aggregator import RecordAggregator

    note_multi = (
        "aws-kinesis-agg writes the same protobuf bytes as the KPL (same field order, same "
        "key-table order), but at the Kinesis level it sends the first record's partition "
        "key and explicit hash key (or none) where the KPL sends 'a' and the first record's "
        "hash key; so data must match byte for byte, the keys need not."
    )
    note_single = (
        "aws-kinesis-agg aggregates even a single record; the KPL (and we) send one record "
        "raw. Decoding is checked; bytes are not compared."
    )

    def aggregate(records, max_size=None):
        agg = RecordAggregator() if max_size is None else RecordAggregator(max_size=max_size)
        out = []
        for r in records:
            # Keys as UTF-8 bytes: with str keys, aws-kinesis-agg 1.2.3 over-counts every
            # repeated partition key in its size estimate (it looks the bytes up in a table
            # of str), so it cuts aggregates early. Bytes keys give its exact sizes.
            full = agg.add_user_record(
                r["partition_key"].encode("utf-8"),
                r["data"],
                None if r["explicit_hash_key"] is None else r["explicit_hash_key"].encode("ascii"),
            )
            if full is not None:
                out.append(full)
        last = agg.clear_and_get()
        if last is not None:
            out.append(last)
        result = []
        for a in out:
            pk, ehk, data = a.get_contents()
            result.append(
                {
                    "partition_key": pk if isinstance(pk, str) else pk.decode(),
                    "explicit_hash_key": ehk if ehk is None or isinstance(ehk, str) else ehk.decode(),
                    "data": b64(data),
                }
            )
        return result

    cases = []
    for name, records in input_sets().items():
        single = len(records) == 1
        cases.append(
            {
                "name": name,
                "max_bytes": None,
                "records": as_json_records(records),
                "kinesis_records": aggregate(records),
                "data_identical": not single,
                "keys_identical": False,
                "note": note_single if single else note_multi,
            }
        )
    records = cut_set()
    cases.append(
        {
            "name": "cut_at_2000_bytes",
            "max_bytes": 2000,
            "records": as_json_records(records),
            "kinesis_records": aggregate(records, max_size=2000),
            "data_identical": True,
            "keys_identical": False,
            "note": "Same exact-size rule as ours (cut when 20 + protobuf length would exceed "
            "the limit): same cut points, same bytes. " + note_multi,
        }
    )
    from importlib.metadata import version

    return {"generator": "aws-kinesis-agg %s" % version("aws-kinesis-agg"), "cases": cases}


# ─── aiokpl ─────────────────────────────────────────────────────────────────


def run_aiokpl():
    from aiokpl.aggregation import Tag, UserRecord, encode_aggregated
    from aiokpl.aggregator import AggregatedBatch, _BufferedRecord
    from aiokpl.hashing import md5_hash_key, parse_explicit_hash_key

    def batch_of(records):
        batch = AggregatedBatch(predicted_shard=0)
        for r in records:
            ur = UserRecord(
                partition_key=r["partition_key"],
                data=r["data"],
                explicit_hash_key=r["explicit_hash_key"],
                tags=tuple(Tag(t[0], t[1]) for t in r.get("tags", [])),
            )
            ehk = r["explicit_hash_key"]
            hash_key = parse_explicit_hash_key(ehk) if ehk is not None else md5_hash_key(r["partition_key"])
            batch.add(_BufferedRecord(user_record=ur, deadline=0.0, hash_key=hash_key))
        return {
            "partition_key": batch.routing_partition_key(),
            "explicit_hash_key": batch.routing_explicit_hash_key(),
            "data": b64(batch.to_blob()),
        }

    note = (
        "aiokpl reproduces the KPL: same protobuf bytes, 'a' and the first record's hash "
        "key for an aggregate, a single record sent raw under its own keys."
    )
    cases = []
    for name, records in input_sets().items():
        cases.append(
            {
                "name": name,
                "max_bytes": None,
                "records": as_json_records(records),
                "kinesis_records": [batch_of(records)],
                "data_identical": True,
                "keys_identical": True,
                "note": note,
            }
        )
    tagged = [
        rec("t1", b"tagged", tags=[["source", "app"], ["empty", None]]),
        rec("t2", b"plain"),
    ]
    cases.append(
        {
            "name": "tags",
            "max_bytes": None,
            "records": as_json_records(tagged),
            "kinesis_records": [batch_of(tagged)],
            "data_identical": False,
            "keys_identical": True,
            "note": "Tags (field 4) are valid in the format but unused by the KPL and the KCL; "
            "we skip them when decoding and never write them, so bytes differ.",
        }
    )
    # Sanity: aiokpl's own encoder agrees with what the batch produced.
    assert encode_aggregated([UserRecord("x", b"1"), UserRecord("y", b"2")])
    from importlib.metadata import version

    return {"generator": "aiokpl %s" % version("aiokpl"), "cases": cases}


def main():
    if len(sys.argv) == 1:
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "aggregation", "setup-venvs.sh")], check=True)
        os.makedirs(OUT_DIR, exist_ok=True)
        for venv, which, out in [
            ("agg", "aws-kinesis-agg", "aws-kinesis-agg.json"),
            ("aiokpl", "aiokpl", "aiokpl.json"),
        ]:
            python = os.path.join(ROOT, ".cache", "py", venv, "bin", "python")
            subprocess.run([python, __file__, which, os.path.join(OUT_DIR, out)], check=True)
            print("wrote", os.path.relpath(os.path.join(OUT_DIR, out), ROOT))
        return
    which, out = sys.argv[1], sys.argv[2]
    doc = run_aws_kinesis_agg() if which == "aws-kinesis-agg" else run_aiokpl()
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()

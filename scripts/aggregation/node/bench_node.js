#!/usr/bin/env node
// Encode and decode rates of npm aws-kinesis-agg on the Rust benchmark's workload, for comparison
// (the npm peer of `cargo xtask bench`; the Python peer is ../bench_python.py).
//
// Workload (as crates/kinesis-aggregation/benches/aggregation.rs and bench_python.py): 20,000
// user records, 100-byte data, 16-byte partition keys (all distinct, or 16 shared), aggregates
// cut at 51200 bytes (the KPL default). The library's own limit is fixed at 1 MiB, so the cut is
// made here with its public size calculation (`calculateUserRecordSize`), then `addUserRecord`
// (which computes the size again: the only overhead this driver adds) and `build` (protobuf
// encode, MD5, concatenation). Decode is `deaggregateSync` with checksum verification of every
// aggregate, given as a Buffer; it returns each record's data base64-encoded (its API).
//
// Timed: best of 5 passes over all records, wall clock. Prints a line per key pattern on stderr
// and, as its last stdout line, `BENCH_JSON {...}` for the harness.
//
// Run: (cd .cache/node/agg && npm ci) — done by `cargo xtask bench` — then
//      NODE_PATH=.cache/node/agg/node_modules node scripts/aggregation/node/bench_node.js
'use strict';

const agg = require('aws-kinesis-agg');

const RECORDS = 20000;
const DATA_LEN = 100;
const MAX_SIZE = 51200;
// magic (4 bytes) and MD5 (16 bytes) around the protobuf message.
const MAX_PROTOBUF = MAX_SIZE - 4 - 16;
const MUL = 0x9e3779b97f4a7c15n;
const MASK = (1n << 64n) - 1n;
const REPEATS = 5;

function workload(distinct) {
  const pool = Buffer.alloc(RECORDS * DATA_LEN);
  for (let i = 0; i < pool.length; i++) pool[i] = (i * 31) % 251;
  const records = [];
  for (let i = 0; i < RECORDS; i++) {
    const key = ((BigInt(i % distinct) * MUL) & MASK).toString(16).padStart(16, '0');
    records.push({ partitionKey: key, data: pool.subarray(i * DATA_LEN, (i + 1) * DATA_LEN) });
  }
  return records;
}

function encode(records) {
  const aggregator = new agg.RecordAggregator();
  const out = [];
  for (const r of records) {
    if (aggregator.totalBytes + aggregator.calculateUserRecordSize(r) > MAX_PROTOBUF) {
      out.push(aggregator.build());
    }
    aggregator.addUserRecord(r);
  }
  if (aggregator.length() > 0) out.push(aggregator.build());
  return out;
}

function decode(aggregates) {
  let n = 0;
  for (let i = 0; i < aggregates.length; i++) {
    const kinesisRecord = {
      partitionKey: aggregates[i].partitionKey,
      sequenceNumber: String(i),
      data: aggregates[i].data,
    };
    agg.deaggregateSync(kinesisRecord, true, (err, userRecords) => {
      if (err) throw err;
      n += userRecords.length;
    });
  }
  return n;
}

function bestOf(f) {
  let best = Infinity;
  let result;
  for (let i = 0; i < REPEATS; i++) {
    const t = process.hrtime.bigint();
    result = f();
    best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e9);
  }
  return [best, result];
}

function version(pkg) {
  return require(`${pkg}/package.json`).version;
}

function main() {
  const results = {};
  for (const [name, distinct] of [['distinct_keys', RECORDS], ['16_keys', 16]]) {
    const records = workload(distinct);
    const [secs, aggregates] = bestOf(() => encode(records));
    const [dsecs, decoded] = bestOf(() => decode(aggregates));
    if (decoded !== RECORDS) throw new Error(`${name}: decoded ${decoded} of ${RECORDS} records`);
    results[name] = {
      aggregates: aggregates.length,
      encode_records_per_s: RECORDS / secs,
      decode_records_per_s: RECORDS / dsecs,
    };
    console.error(
      `${name.padEnd(14)} ${aggregates.length} aggregates; encode ${secs.toFixed(3)} s = ` +
        `${(RECORDS / secs).toFixed(0)} records/s; decode ${dsecs.toFixed(3)} s = ` +
        `${(RECORDS / dsecs).toFixed(0)} records/s (best of ${REPEATS})`,
    );
  }
  const report = {
    peer: 'aws-kinesis-agg (npm)',
    versions: {
      'aws-kinesis-agg': version('aws-kinesis-agg'),
      protobufjs: version('protobufjs'),
      node: process.version,
    },
    records: RECORDS,
    repeats: REPEATS,
    results,
  };
  console.log('BENCH_JSON ' + JSON.stringify(report));
}

main();

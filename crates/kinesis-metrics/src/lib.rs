//! Metric exporters for kinesis-rs applications (work in progress).

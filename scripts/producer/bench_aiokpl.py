"""The producer benchmark's Python peer: aiokpl 0.2.0 against the local Kinesis.

Same workload as `bench_producer --scenario cpu`: 4 shards, N records of 100 bytes with
16-byte keys, every outcome awaited and checked. Prints records/s and CPU per record of
this process (resource.getrusage: user + sys).

Run through scripts/producer/bench-aiokpl.sh, which starts the emulator; by hand:
    LOCAL_AWS_KINESIS_ENDPOINT=http://127.0.0.1:PORT .cache/py/aiokpl/bin/python \
        scripts/producer/bench_aiokpl.py --records 100000
"""

import argparse
import asyncio
import os
import resource
import time

import botocore.session
from aiokpl import Config, Producer


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def create_stream(endpoint: str, key: str, secret: str, name: str, shards: int) -> None:
    client = botocore.session.get_session().create_client(
        "kinesis",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )
    client.create_stream(StreamName=name, ShardCount=shards)
    for _ in range(1500):
        s = client.describe_stream_summary(StreamName=name)
        if s["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.02)
    raise RuntimeError(f"stream {name} not ACTIVE")


async def run(args) -> None:
    endpoint = os.environ["LOCAL_AWS_KINESIS_ENDPOINT"]
    key = os.environ.get("LOCAL_AWS_ACCESS_KEY_ID", "local")
    secret = os.environ.get("LOCAL_AWS_SECRET_ACCESS_KEY", "local")
    stream = f"bench-aiokpl-{os.getpid()}-{int(time.time())}"
    create_stream(endpoint, key, secret, stream, args.shards)
    unlimited = 1e12 if args.unlimited else None
    config = Config(
        region="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        aggregation_enabled=not args.no_aggregation,
        **(
            {
                "rate_limit_records_per_sec_per_shard": unlimited,
                "rate_limit_bytes_per_sec_per_shard": unlimited,
            }
            if unlimited
            else {}
        ),
    )
    async with Producer(config) as producer:
        # Warm-up: the pipeline, its shard map and a connection.
        o = await producer.put_record(stream=stream, partition_key="warm-up", data=b"x")
        await producer.flush()
        assert (await o.wait()).success

        cpu0, t0 = cpu_seconds(), time.perf_counter()
        pad = b"." * 92
        outcomes = []
        for i in range(args.records):
            outcomes.append(
                await producer.put_record(
                    stream=stream,
                    partition_key=f"{i:016x}",
                    data=i.to_bytes(8, "big") + pad,
                )
            )
        await producer.flush()
        ok = failed = 0
        for o in outcomes:
            r = await o.wait()
            if r.success:
                ok += 1
            else:
                failed += 1
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    print(
        f"scenario=aiokpl shards={args.shards} records={args.records} "
        f"aggregation={not args.no_aggregation} rate_limit={'unlimited' if args.unlimited else 'default(100)'}"
    )
    print(
        f"  delivered ok={ok} failed={failed} wall_s={wall:.2f} records/s={ok / wall:.0f} "
        f"cpu_s={cpu:.2f} cpu_per_record_us={cpu * 1e6 / args.records:.3f} "
        f"cores_busy={cpu / wall:.2f}"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--unlimited", action="store_true", help="open aiokpl's rate limiter")
    p.add_argument("--no-aggregation", action="store_true")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()

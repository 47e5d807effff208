#!/usr/bin/env bash
# External (npm) AWS emulators: the cross-check for our in-process local stack (crates/local-aws).
#
#   scripts/external-emulators.sh start     # install if needed, start all three, wait until they answer
#   eval "$(scripts/external-emulators.sh env)"   # LOCAL_AWS_* exports; LocalAws::start() then uses them
#   scripts/external-emulators.sh status    # which are running (exit 0 only if all three are)
#   scripts/external-emulators.sh check     # end-to-end smoke test of each emulator over HTTP
#   scripts/external-emulators.sh stop      # stop the processes this script started
#
# Emulators (pinned; installed with npm into $ROOT/.cache/npm-emulators, skipped when already there):
#   kinesis-local 0.6.2  (= kinesis-mock, the Kinesis emulator LocalStack uses)
#   dynalite 4.0.0       (DynamoDB)
#   s3rver 3.7.1         (S3)
# State (logs, PID files, ports, data, generated helper JS) lives in $ROOT/.cache/external-emulators/.
# Everything listens on 127.0.0.1 only, on free ports picked at start.
#
# Environment (all optional):
#   EXTERNAL_KINESIS_PORT, EXTERNAL_KINESIS_TLS_PORT, EXTERNAL_DYNAMODB_PORT, EXTERNAL_S3_PORT
#       fixed ports instead of free ones picked by the kernel (each is checked to be free first)
#   EXTERNAL_EMULATORS_WAIT   seconds to wait for each emulator to answer (default 60)
#   kinesis-mock's own variables (CREATE_STREAM_DURATION, SHARD_LIMIT, LOG_LEVEL, ...) override our defaults.
#
# Quirks found (2026-11, Node 20.20, npm 11):
#  kinesis-local / kinesis-mock (a Scala.js bundle, main.js):
#   - Dies with "server.json not found" unless KINESIS_MOCK_CERT_PATH points at the self-signed certificate
#     shipped in the package (node_modules/kinesis-local/server.json). It always opens a TLS port as well as
#     the plain one, so KINESIS_MOCK_TLS_PORT must be a free port too (default 4567 would collide).
#     The bundled certificate has no subjectAltName: a client verifying TLS needs its own cert.
#   - The listen address is hard-coded to 0.0.0.0 (no variable for it). We preload a 10-line shim
#     (NODE_OPTIONS=--require loopback.js) that rewrites wildcard hosts in net.Server#listen to 127.0.0.1,
#     so it binds to loopback only (checked with `ss -ltn`).
#   - Every state transition waits a configurable Duration (default 500ms each): CREATE_/DELETE_STREAM,
#     (DE)REGISTER_STREAM_CONSUMER, MERGE_SHARDS, SPLIT_SHARD, UPDATE_SHARD_COUNT, UPDATE_STREAM_MODE,
#     START_/STOP_STREAM_ENCRYPTION _DURATION. We set them all to 50ms (still non-zero, so CREATING /
#     UPDATING states stay observable). SHARD_LIMIT defaults to 50 (we use 1000),
#     ON_DEMAND_STREAM_COUNT_LIMIT to 10 (we use 100), so parallel tests do not hit LimitExceeded.
#   - Requires an Authorization header AND an X-Amz-Date (or Date) header, but does not check the signature:
#     any access key is accepted; a 12-digit access key id selects that account's namespace.
#   - Logs nothing at LOG_LEVEL=INFO for normal requests.
#  dynalite:
#   - --host 127.0.0.1 binds loopback. --createTableMs/--deleteTableMs/--updateTableMs default to 500:
#     we pass 0 (tables are ACTIVE in the CreateTable response). In memory (no --path): fresh each start.
#   - Needs an Authorization header (any credentials; signature not checked). TableName must be ≥ 3 chars.
#   - npm 11 does not run classic-level's install script (allowScripts warning); harmless: dynalite
#     runs in memory and classic-level ships prebuilds for linux-x64 anyway.
#  s3rver:
#   - Only the access key id S3RVER is accepted (InvalidAccessKeyId otherwise). SigV4 signatures are not
#     verified at all (any secret passes; only V2 signatures are checked), so S3RVER/S3RVER is simply the
#     documented pair. Header x-amz-content-sha256 is required on signed requests.
#   - ListObjectsV2 continuation tokens are DES-encrypted: on Node 20 (OpenSSL 3) paging fails without
#     NODE_OPTIONS=--openssl-legacy-provider, which we set for it.
#   - -a 127.0.0.1 binds loopback; --no-vhost-buckets (we use path-style). Data dir wiped on each start.
#   - Bucket names must be 3-63 chars. Ignores If-None-Match.
#
# Timings measured on this machine (2 cores, other builds running, 2026-11):
#   cold `start` (no .cache/npm-emulators: npm install 11-13 s, 141 packages, ~40 MB): 15-18 s
#   warm `start` (already installed): 2.5-5 s (kinesis-mock needs ~2-3 s to answer, the others < 1 s)
#   `start` when already running: ~0.5 s;  `stop`: ~0.3 s;  `check`: ~2 s
#   kinesis-mock answers each request in ~70-115 ms; CreateStream -> ACTIVE ~150-300 ms with 50ms delays.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NPM_DIR="$ROOT/.cache/npm-emulators"
STATE="$ROOT/.cache/external-emulators"
SERVICES=(kinesis dynamodb s3)

KINESIS_PKG="kinesis-local"; KINESIS_VERSION="0.6.2"
DYNALITE_PKG="dynalite"; DYNALITE_VERSION="4.0.0"
S3RVER_PKG="s3rver"; S3RVER_VERSION="3.7.1"

log() { echo "external-emulators: $*" >&2; }
die() { log "error: $*"; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH (needs Node >= 20 and npm)"; }

# The JS entry point of each service: used to launch it and to recognise our own processes.
entry_of() {
    case "$1" in
        kinesis) echo "$NPM_DIR/node_modules/$KINESIS_PKG/main.js" ;;
        dynamodb) echo "$NPM_DIR/node_modules/$DYNALITE_PKG/cli.js" ;;
        s3) echo "$NPM_DIR/node_modules/$S3RVER_PKG/bin/s3rver.js" ;;
    esac
}

pkg_version() { # prints the installed version of an npm package in NPM_DIR, or nothing
    local pj="$NPM_DIR/node_modules/$1/package.json"
    [[ -f "$pj" ]] || return 0
    node -e 'console.log(require(process.argv[1]).version)' "$pj" 2>/dev/null || true
}

install_emulators() {
    need node; need npm
    if [[ "$(pkg_version "$KINESIS_PKG")" == "$KINESIS_VERSION" &&
          "$(pkg_version "$DYNALITE_PKG")" == "$DYNALITE_VERSION" &&
          "$(pkg_version "$S3RVER_PKG")" == "$S3RVER_VERSION" ]]; then
        return 0
    fi
    log "installing $KINESIS_PKG@$KINESIS_VERSION $DYNALITE_PKG@$DYNALITE_VERSION $S3RVER_PKG@$S3RVER_VERSION into $NPM_DIR"
    mkdir -p "$NPM_DIR"
    local t0=$SECONDS
    npm install --prefix "$NPM_DIR" --save-exact --no-audit --no-fund --loglevel=error \
        "$KINESIS_PKG@$KINESIS_VERSION" "$DYNALITE_PKG@$DYNALITE_VERSION" "$S3RVER_PKG@$S3RVER_VERSION" >&2 ||
        die "npm install failed"
    [[ "$(pkg_version "$KINESIS_PKG")" == "$KINESIS_VERSION" ]] || die "$KINESIS_PKG $KINESIS_VERSION missing after npm install"
    log "npm install took $((SECONDS - t0)) s"
}

# Helper JS, regenerated on every start (cheap, keeps this script the single source).
write_helpers() {
    mkdir -p "$STATE"
    cat >"$STATE/loopback.js" <<'JS'
// Preloaded into kinesis-mock (NODE_OPTIONS=--require): it hard-codes 0.0.0.0 as its listen host.
// Rewrites wildcard/missing hosts in net.Server#listen to 127.0.0.1 (EMULATOR_BIND_HOST overrides).
const net = require('net');
const listen = net.Server.prototype.listen;
const wild = (h) => h === undefined || h === null || h === '' || h === '0.0.0.0' || h === '::';
net.Server.prototype.listen = function (...args) {
  const host = process.env.EMULATOR_BIND_HOST || '127.0.0.1';
  const a0 = args[0];
  if (a0 && typeof a0 === 'object' && !Array.isArray(a0) && 'port' in a0 && !('path' in a0)) {
    if (wild(a0.host)) args[0] = { ...a0, host };
  } else if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\d+$/.test(a0))) {
    if (typeof args[1] === 'string') { if (wild(args[1])) args[1] = host; }
    else args.splice(1, 0, host);
  }
  return listen.apply(this, args);
};
JS
    cat >"$STATE/probe.js" <<'JS'
// node probe.js ports N...          pick N distinct free loopback ports (kernel-assigned), print them
// node probe.js free PORT           exit 0 if PORT can be bound on 127.0.0.1
// node probe.js ready SERVICE URL   exit 0 if the emulator answers a real API call
// node probe.js check K_URL D_URL S_URL   end-to-end smoke test of all three
'use strict';
const http = require('http');
const net = require('net');
const [mode, ...argv] = process.argv.slice(2);

function amzDate() { return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, ''); }
function auth(service) {
  return 'AWS4-HMAC-SHA256 Credential=S3RVER/' + amzDate().slice(0, 8) + '/us-east-1/' + service +
    '/aws4_request, SignedHeaders=host;x-amz-date, Signature=0000';
}
function request(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method,
      headers: { 'x-amz-date': amzDate(), ...headers }, timeout: 5000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}
async function kinesis(url, op, input) {
  const r = await request(url + '/', { method: 'POST', body: JSON.stringify(input), headers: {
    'content-type': 'application/x-amz-json-1.1', 'x-amz-target': 'Kinesis_20131202.' + op,
    authorization: auth('kinesis') } });
  if (r.status !== 200) throw new Error(`Kinesis ${op}: HTTP ${r.status} ${r.body}`);
  return JSON.parse(r.body || '{}');
}
async function dynamo(url, op, input, expectStatus = 200) {
  const r = await request(url + '/', { method: 'POST', body: JSON.stringify(input), headers: {
    'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'DynamoDB_20120810.' + op,
    authorization: auth('dynamodb') } });
  if (r.status !== expectStatus) throw new Error(`DynamoDB ${op}: HTTP ${r.status} ${r.body}`);
  return JSON.parse(r.body || '{}');
}
async function s3(url, method, path, body, expectStatus = 200) {
  const r = await request(url + path, { method, body, headers: {
    authorization: auth('s3'), 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } });
  if (r.status !== expectStatus) throw new Error(`S3 ${method} ${path}: HTTP ${r.status} ${r.body}`);
  return r.body;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function assert(cond, what) { if (!cond) throw new Error('check failed: ' + what); }

async function ready(service, url) {
  if (service === 'kinesis') assert(Array.isArray((await kinesis(url, 'ListStreams', {})).StreamNames), 'ListStreams');
  else if (service === 'dynamodb') assert(Array.isArray((await dynamo(url, 'ListTables', {})).TableNames), 'ListTables');
  else if (service === 's3') assert((await s3(url, 'GET', '/')).includes('ListAllMyBucketsResult'), 'ListBuckets');
  else throw new Error('unknown service ' + service);
}

async function check(kUrl, dUrl, sUrl) {
  const id = 'smoke-' + process.pid + '-' + Date.now();
  // Kinesis: create, wait ACTIVE, put, read back, delete.
  let t0 = Date.now();
  await kinesis(kUrl, 'CreateStream', { StreamName: id, ShardCount: 2 });
  for (;;) {
    const s = (await kinesis(kUrl, 'DescribeStreamSummary', { StreamName: id })).StreamDescriptionSummary;
    if (s.StreamStatus === 'ACTIVE') break;
    assert(Date.now() - t0 < 10000, 'stream ACTIVE within 10 s');
    await sleep(20);
  }
  const activeMs = Date.now() - t0;
  const put = await kinesis(kUrl, 'PutRecord', { StreamName: id, PartitionKey: 'pk', Data: Buffer.from('hello').toString('base64') });
  const it = await kinesis(kUrl, 'GetShardIterator', { StreamName: id, ShardId: put.ShardId, ShardIteratorType: 'TRIM_HORIZON' });
  const got = await kinesis(kUrl, 'GetRecords', { ShardIterator: it.ShardIterator });
  assert(got.Records.length === 1 && Buffer.from(got.Records[0].Data, 'base64').toString() === 'hello', 'GetRecords returns the record');
  assert((await kinesis(kUrl, 'ListStreams', {})).StreamNames.includes(id), 'ListStreams lists the stream');
  await kinesis(kUrl, 'DeleteStream', { StreamName: id });
  console.log(`kinesis  ok (CreateStream -> ACTIVE in ${activeMs} ms, PutRecord/GetRecords round trip)`);

  // DynamoDB: create table, conditional put twice (second must fail), delete.
  t0 = Date.now();
  const created = await dynamo(dUrl, 'CreateTable', { TableName: id, BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [{ AttributeName: 'k', AttributeType: 'S' }], KeySchema: [{ AttributeName: 'k', KeyType: 'HASH' }] });
  for (let st = created.TableDescription.TableStatus; st !== 'ACTIVE';) {
    assert(Date.now() - t0 < 10000, 'table ACTIVE within 10 s');
    await sleep(20);
    st = (await dynamo(dUrl, 'DescribeTable', { TableName: id })).Table.TableStatus;
  }
  const item = { TableName: id, Item: { k: { S: 'a' } }, ConditionExpression: 'attribute_not_exists(k)' };
  await dynamo(dUrl, 'PutItem', item);
  const failed = await dynamo(dUrl, 'PutItem', item, 400);
  assert(String(failed.__type).endsWith('ConditionalCheckFailedException'), 'conditional put fails the second time');
  await dynamo(dUrl, 'DeleteTable', { TableName: id });
  console.log(`dynamodb ok (CreateTable -> ACTIVE in ${Date.now() - t0} ms, conditional PutItem)`);

  // S3: bucket, 3 objects, ListObjectsV2 paging with max-keys=2 (needs the legacy OpenSSL provider), get, cleanup.
  const b = '/' + id;
  await s3(sUrl, 'PUT', b);
  for (const k of ['a', 'b', 'c']) await s3(sUrl, 'PUT', `${b}/${k}`, 'body-' + k);
  const p1 = await s3(sUrl, 'GET', `${b}?list-type=2&max-keys=2`);
  const token = (p1.match(/<NextContinuationToken>([^<]+)</) || [])[1];
  assert(token && p1.includes('<IsTruncated>true'), 'first page truncated with a token');
  const p2 = await s3(sUrl, 'GET', `${b}?list-type=2&max-keys=2&continuation-token=${encodeURIComponent(token)}`);
  assert(p2.includes('<Key>c</Key>') && p2.includes('<IsTruncated>false'), 'second page has the last key');
  assert((await s3(sUrl, 'GET', `${b}/b`)) === 'body-b', 'GetObject body');
  for (const k of ['a', 'b', 'c']) await s3(sUrl, 'DELETE', `${b}/${k}`, undefined, 204);
  await s3(sUrl, 'DELETE', b, undefined, 204);
  console.log('s3       ok (PutObject/GetObject, ListObjectsV2 paging)');
}

async function main() {
  if (mode === 'ports') {
    const n = Number(argv[0]);
    const servers = [];
    for (let i = 0; i < n; i++) {
      const s = net.createServer();
      await new Promise((res, rej) => { s.once('error', rej); s.listen(0, '127.0.0.1', res); });
      servers.push(s);
    }
    console.log(servers.map((s) => s.address().port).join(' '));
    servers.forEach((s) => s.close());
  } else if (mode === 'free') {
    const s = net.createServer();
    await new Promise((res, rej) => { s.once('error', rej); s.listen(Number(argv[0]), '127.0.0.1', res); });
    s.close();
  } else if (mode === 'ready') {
    await ready(argv[0], argv[1]);
  } else if (mode === 'check') {
    await check(argv[0], argv[1], argv[2]);
  } else {
    throw new Error('usage: probe.js ports N | free PORT | ready SERVICE URL | check K D S');
  }
}
main().catch((e) => { if (mode !== 'ready' && mode !== 'free') console.error(e.message || e); process.exit(1); });
JS
}

pid_file() { echo "$STATE/$1.pid"; }

# Alive and not a zombie. Our emulators outlive the `start` call, so they are reparented to init (or a
# subreaper), which may take a second or two to reap them: `kill -0` alone would still see a zombie.
alive() {
    local state
    state="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}
port_file() { echo "$STATE/$1.port"; }
log_file() { echo "$STATE/$1.log"; }

# Prints the PID of our running process for SERVICE, or fails. Verifies that the PID from the file is
# alive and still runs that service's entry script (PIDs get reused).
running_pid() {
    local svc="$1" pf pid
    pf="$(pid_file "$svc")"
    [[ -f "$pf" ]] || return 1
    pid="$(<"$pf")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$(entry_of "$svc")" || return 1
    echo "$pid"
}

port_of() { local pf; pf="$(port_file "$1")"; [[ -f "$pf" ]] && head -n1 "$pf"; }
url_of() { echo "http://127.0.0.1:$(port_of "$1")"; }

port_is_free() { node "$STATE/probe.js" free "$1" 2>/dev/null; }

# choose_port VAR_NAME: the override if set (must be free), else a kernel-picked free port.
FREE_PORTS=()
choose_port() {
    local override="${!1:-}"
    if [[ -n "$override" ]]; then
        [[ "$override" =~ ^[0-9]+$ ]] || die "$1=$override is not a port number"
        port_is_free "$override" || die "$1=$override: port is not free on 127.0.0.1"
        echo "$override"
    else
        [[ ${#FREE_PORTS[@]} -gt 0 ]] || die "internal: no free port left"
        echo "${FREE_PORTS[0]}"
    fi
}

launch() { # launch SERVICE PORT_FILE_CONTENT -- env/cmd...
    local svc="$1" ports="$2"; shift 2
    local lf; lf="$(log_file "$svc")"
    : >"$lf"
    # The background job execs node directly (env and nohup exec too), so $! is node's PID.
    nohup env "$@" >"$lf" 2>&1 </dev/null 9>&- &
    echo "$!" >"$(pid_file "$svc")"
    local -a port_list
    read -r -a port_list <<<"$ports"
    printf '%s\n' "${port_list[@]}" >"$(port_file "$svc")"
}

start_one() {
    local svc="$1" p tls
    case "$svc" in
        kinesis)
            p="$(choose_port EXTERNAL_KINESIS_PORT)"; FREE_PORTS=("${FREE_PORTS[@]:1}")
            tls="$(choose_port EXTERNAL_KINESIS_TLS_PORT)"; FREE_PORTS=("${FREE_PORTS[@]:1}")
            [[ "$p" != "$tls" ]] || die "kinesis plain and TLS ports must differ ($p)"
            # Our defaults, each overridable from the caller's environment.
            launch kinesis "$p $tls" \
                NODE_OPTIONS="--require $STATE/loopback.js" \
                KINESIS_MOCK_CERT_PATH="$NPM_DIR/node_modules/$KINESIS_PKG/server.json" \
                KINESIS_MOCK_PLAIN_PORT="$p" KINESIS_MOCK_TLS_PORT="$tls" \
                CREATE_STREAM_DURATION="${CREATE_STREAM_DURATION:-50ms}" \
                DELETE_STREAM_DURATION="${DELETE_STREAM_DURATION:-50ms}" \
                REGISTER_STREAM_CONSUMER_DURATION="${REGISTER_STREAM_CONSUMER_DURATION:-50ms}" \
                DEREGISTER_STREAM_CONSUMER_DURATION="${DEREGISTER_STREAM_CONSUMER_DURATION:-50ms}" \
                START_STREAM_ENCRYPTION_DURATION="${START_STREAM_ENCRYPTION_DURATION:-50ms}" \
                STOP_STREAM_ENCRYPTION_DURATION="${STOP_STREAM_ENCRYPTION_DURATION:-50ms}" \
                MERGE_SHARDS_DURATION="${MERGE_SHARDS_DURATION:-50ms}" \
                SPLIT_SHARD_DURATION="${SPLIT_SHARD_DURATION:-50ms}" \
                UPDATE_SHARD_COUNT_DURATION="${UPDATE_SHARD_COUNT_DURATION:-50ms}" \
                UPDATE_STREAM_MODE_DURATION="${UPDATE_STREAM_MODE_DURATION:-50ms}" \
                SHARD_LIMIT="${SHARD_LIMIT:-1000}" \
                ON_DEMAND_STREAM_COUNT_LIMIT="${ON_DEMAND_STREAM_COUNT_LIMIT:-100}" \
                SHOULD_PERSIST_DATA=false \
                node "$(entry_of kinesis)"
            ;;
        dynamodb)
            p="$(choose_port EXTERNAL_DYNAMODB_PORT)"; FREE_PORTS=("${FREE_PORTS[@]:1}")
            launch dynamodb "$p" \
                node "$(entry_of dynamodb)" --host 127.0.0.1 --port "$p" \
                --createTableMs 0 --deleteTableMs 0 --updateTableMs 0
            ;;
        s3)
            p="$(choose_port EXTERNAL_S3_PORT)"; FREE_PORTS=("${FREE_PORTS[@]:1}")
            rm -rf "$STATE/s3-data"; mkdir -p "$STATE/s3-data"
            launch s3 "$p" \
                NODE_OPTIONS="--openssl-legacy-provider" \
                node "$(entry_of s3)" -d "$STATE/s3-data" -a 127.0.0.1 -p "$p" --no-vhost-buckets
            ;;
    esac
}

wait_ready() {
    local svc="$1" limit="${EXTERNAL_EMULATORS_WAIT:-60}" t0=$SECONDS pid
    pid="$(<"$(pid_file "$svc")")"
    while :; do
        if ! alive "$pid"; then
            log "$svc (pid $pid) exited during startup; last lines of $(log_file "$svc"):"
            tail -n 30 "$(log_file "$svc")" >&2 || true
            rm -f "$(pid_file "$svc")"
            return 1
        fi
        if node "$STATE/probe.js" ready "$svc" "$(url_of "$svc")" 2>/dev/null; then
            log "$svc ready on $(url_of "$svc") (pid $pid, $((SECONDS - t0)) s)"
            return 0
        fi
        if ((SECONDS - t0 >= limit)); then
            log "$svc did not answer on $(url_of "$svc") within ${limit} s; last lines of $(log_file "$svc"):"
            tail -n 30 "$(log_file "$svc")" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

lock() { # serialise concurrent start/stop calls
    mkdir -p "$STATE"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$STATE/.lock"
        flock -w 300 9 || die "could not take $STATE/.lock"
    fi
}

abort_start() {
    local s
    log "start failed; stopping what was started"
    for s in "${STARTING[@]}"; do stop_one "$s"; done
}

cmd_start() {
    local t0=$SECONDS svc pid to_start=() vars=() failed=0
    need node
    lock
    install_emulators
    write_helpers
    for svc in "${SERVICES[@]}"; do
        if pid="$(running_pid "$svc")"; then
            log "$svc already running (pid $pid) on $(url_of "$svc")"
        else
            rm -f "$(pid_file "$svc")" "$(port_file "$svc")"
            to_start+=("$svc")
        fi
    done
    ((${#to_start[@]})) || return 0
    # Check every requested fixed port before launching anything.
    local var
    for svc in "${to_start[@]}"; do
        case "$svc" in
            kinesis) vars=(EXTERNAL_KINESIS_PORT EXTERNAL_KINESIS_TLS_PORT) ;;
            dynamodb) vars=(EXTERNAL_DYNAMODB_PORT) ;;
            s3) vars=(EXTERNAL_S3_PORT) ;;
        esac
        for var in "${vars[@]}"; do
            [[ -z "${!var:-}" ]] || [[ "${!var}" =~ ^[0-9]+$ ]] || die "$var=${!var} is not a port number"
            [[ -z "${!var:-}" ]] || port_is_free "${!var}" || die "$var=${!var}: port is not free on 127.0.0.1"
        done
    done
    # Kernel-picked free ports, all distinct (kinesis needs two).
    read -r -a FREE_PORTS <<<"$(node "$STATE/probe.js" ports 4)"
    # Whatever goes wrong from here on, do not leave half a stack behind.
    STARTING=("${to_start[@]}")
    trap 'abort_start' EXIT
    for svc in "${to_start[@]}"; do start_one "$svc"; done
    for svc in "${to_start[@]}"; do wait_ready "$svc" || failed=1; done
    ((failed == 0)) || exit 1
    trap - EXIT
    log "started ${to_start[*]} in $((SECONDS - t0)) s"
}

stop_one() {
    local svc="$1" pid i
    if pid="$(running_pid "$svc")"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "$svc (pid $pid) ignored SIGTERM for 5 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $svc (pid $pid)"
    elif [[ -f "$(pid_file "$svc")" ]]; then
        log "$svc: stale PID file (process gone or not ours), removing it"
    fi
    rm -f "$(pid_file "$svc")" "$(port_file "$svc")"
}

cmd_stop() {
    lock
    local svc
    for svc in "${SERVICES[@]}"; do stop_one "$svc"; done
}

cmd_status() {
    local svc pid all=0
    for svc in "${SERVICES[@]}"; do
        if pid="$(running_pid "$svc")"; then
            echo "$svc: running (pid $pid) on $(url_of "$svc")"
        else
            echo "$svc: not running"
            all=1
        fi
    done
    return "$all"
}

cmd_env() {
    local svc
    for svc in "${SERVICES[@]}"; do
        running_pid "$svc" >/dev/null || die "$svc is not running (run: $0 start)"
    done
    echo "export LOCAL_AWS_KINESIS_ENDPOINT=$(url_of kinesis)"
    echo "export LOCAL_AWS_DYNAMODB_ENDPOINT=$(url_of dynamodb)"
    echo "export LOCAL_AWS_S3_ENDPOINT=$(url_of s3)"
    echo "export LOCAL_AWS_ACCESS_KEY_ID=S3RVER"
    echo "export LOCAL_AWS_SECRET_ACCESS_KEY=S3RVER"
    echo "export LOCAL_AWS_BACKEND=external"
    # kinesis-mock's TLS port (self-signed cert without SAN), for HTTP/2 SubscribeToShard experiments.
    echo "export LOCAL_AWS_KINESIS_TLS_ENDPOINT=https://127.0.0.1:$(sed -n 2p "$(port_file kinesis)")"
}

cmd_check() {
    local svc
    for svc in "${SERVICES[@]}"; do
        running_pid "$svc" >/dev/null || die "$svc is not running (run: $0 start)"
    done
    [[ -f "$STATE/probe.js" ]] || write_helpers
    node "$STATE/probe.js" check "$(url_of kinesis)" "$(url_of dynamodb)" "$(url_of s3)"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    check) cmd_check ;;
    *) echo "usage: $0 start|stop|status|env|check" >&2; exit 2 ;;
esac

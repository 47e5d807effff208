//! MD5 of many messages at once: partition keys (the batch form of
//! [`HashKey::from_partition_key`]) and the aggregates of one request ([`digests`], behind
//! `seal_all`).
//!
//! For aggregates (tens of kilobytes each, several per request), [`digests`] keeps 8
//! messages in the 8 lanes and compresses one block of each per step
//! (`avx2::compress_x8`); a message whose full blocks are done is finished scalar (its
//! tail and padding, one or two blocks) and the next message takes its lane. What follows
//! is about keys, where every message is one block.
//!
//! A producer predicts every record's shard from MD5(partition key). Keys are short, so
//! each hash is a single 64-byte MD5 block, and the scalar cost is dominated by MD5's 64
//! dependent steps. Eight independent keys can run those steps side by side, one key per
//! 32-bit lane of an AVX2 register: MD5 only needs 32-bit adds, and/or/xor and rotates
//! (AVX2 has no rotate; shift left, shift right, or).
//!
//! ```text
//!  keys (≤ 55 bytes)   8 × [u8; 64] blocks        16 × __m256i              4 × __m256i
//!  k0 … k7  ─ pad ─►   key ‖ 80 ‖ 0… ‖ bits  ─►   m[j] = word j of     ─►   a, b, c, d
//!                      (one block per key)  transpose  each block      64   (+ initial
//!                                           8×8 ×2   (lane i = key i)  steps  state)
//!                                                                            │ byte-swap,
//!  out[slot(k0)] …  ◄── HashKey(u128) × 8 ◄── [u128; 8] ◄── transpose back ◄─┘ 4×8 → 8×4
//! ```
//!
//! - Padding is MD5's: the key, the byte 0x80, zeros, and the key's length in bits as a
//!   little-endian u64 in the last 8 bytes. That leaves room for 55 key bytes; longer keys
//!   need two or more blocks and go through the scalar `md-5` path, as do all keys on
//!   machines without AVX2 and on other architectures.
//! - A key's digest is the bytes of the state words a, b, c, d, each little-endian;
//!   [`HashKey`] reads those 16 bytes as a big-endian `u128`, which is
//!   `bswap(a) << 96 | bswap(b) << 64 | bswap(c) << 32 | bswap(d)`. The back-transpose
//!   byte-swaps every word and interleaves them as d, c, b, a so that each 16-byte group
//!   is that `u128` in (little-endian) memory order.
//! - Keys are gathered in input order into runs of 16 one-block keys; a longer key in
//!   between is hashed at once (scalar) and the run carries on, so output order is input
//!   order. A run is [`GROUPS`] = 2 groups of 8 whose steps are interleaved: one group's
//!   64 steps are one long dependency chain, and a second independent chain keeps the
//!   vector units busy while the first waits. At the end, a full group of 8 runs alone,
//!   and a last group of fewer than 8 is padded with empty keys when it has at least
//!   [`MIN_PADDED_RUN`] keys (a vector run then costs less than that many scalar
//!   hashes), otherwise hashed scalar.
//!
//! All `unsafe` of the crate lives in this module: the call into the AVX2 function (sound
//! because AVX2 was detected at run time first) and its unaligned loads and stores from
//! and to fixed-size local arrays.

use crate::hash_key::HashKey;

/// The longest key that fits one MD5 block: 64 bytes minus the 0x80 byte and the 8-byte
/// length.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // used by tests everywhere
const MAX_ONE_BLOCK_KEY: usize = 55;

/// Keys hashed together: 8 × u32 lanes in a 256-bit register.
#[cfg(target_arch = "x86_64")]
const LANES: usize = 8;

/// The fewest leftover one-block keys worth a padded 8-lane run instead of scalar hashes.
/// Measured (release, AMD EPYC, 16-byte keys, whole call): 2 keys take 205 ns batched
/// (one padded run) against 290 ns scalar; 1 key alone is cheaper scalar (139 ns).
#[cfg(target_arch = "x86_64")]
const MIN_PADDED_RUN: usize = 2;

/// Groups of 8 hashed together, their steps interleaved. Measured: 2 groups are about 30 %
/// cheaper per key than 1; 3 are no better than 2 (16 ymm registers hold 2 states).
#[cfg(target_arch = "x86_64")]
const GROUPS: usize = 2;

/// How the keys are hashed. Tests force [`Backend::Scalar`] to compare the two paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// `md-5`, one key at a time.
    Scalar,
    /// 8 one-block keys per AVX2 run; longer keys scalar.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Backend {
    /// The fastest backend this machine runs. `is_x86_feature_detected!` queries CPUID
    /// once per process and caches the answer in a static, so this is a load and a test.
    pub(crate) fn detect() -> Backend {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return Backend::Avx2;
        }
        Backend::Scalar
    }
}

/// Appends the hash key of every key to `out`, in order, with `backend`.
pub(crate) fn extend<'a>(
    backend: Backend,
    keys: impl IntoIterator<Item = &'a str>,
    out: &mut Vec<HashKey>,
) {
    let keys = keys.into_iter();
    out.reserve(keys.size_hint().0);
    match backend {
        Backend::Scalar => out.extend(keys.map(HashKey::from_partition_key)),
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => extend_avx2(keys, out),
    }
}

#[cfg(target_arch = "x86_64")]
fn extend_avx2<'a>(keys: impl Iterator<Item = &'a str>, out: &mut Vec<HashKey>) {
    // The current run of up to 16 one-block keys (two groups of 8) and the output
    // positions their hashes go to.
    let mut run: [[&[u8]; LANES]; GROUPS] = [[&[]; LANES]; GROUPS];
    let mut slots = [0usize; GROUPS * LANES];
    let mut len = 0;
    for key in keys {
        if key.len() > MAX_ONE_BLOCK_KEY {
            out.push(HashKey::from_partition_key(key));
            continue;
        }
        run[len / LANES][len % LANES] = key.as_bytes();
        slots[len] = out.len();
        out.push(HashKey::MIN); // overwritten when the run is hashed
        len += 1;
        if len == GROUPS * LANES {
            // SAFETY: the Avx2 backend is only chosen after `is_x86_feature_detected!
            // ("avx2")` said yes (Backend::detect), or by a test that checked the same.
            let digests = unsafe { avx2::md5_run(&run) };
            for (slot, digest) in slots.iter().zip(digests.as_flattened()) {
                out[*slot] = HashKey(*digest);
            }
            len = 0;
        }
    }
    // The tail: a full first group runs alone; a partial group is padded with empty
    // keys if it is long enough to pay, else hashed scalar.
    let (full, partial) = (len / LANES, len % LANES);
    let padded = partial >= MIN_PADDED_RUN;
    for (g, group) in run.iter_mut().enumerate().take(full + usize::from(padded)) {
        if g == full {
            group[partial..].fill(&[]);
        }
        // SAFETY: as above.
        let digests = unsafe { avx2::md5_x8(group) };
        let slots = &slots[g * LANES..len.min((g + 1) * LANES)];
        for (slot, digest) in slots.iter().zip(digests) {
            out[*slot] = HashKey(digest);
        }
    }
    if !padded {
        let keys = &run[full][..partial];
        for (slot, key) in slots[full * LANES..len].iter().zip(keys) {
            // The key came from a &str; hash its bytes as the scalar path does.
            out[*slot] = scalar_bytes(key);
        }
    }
}

/// MD5's initial state (RFC 1321 §3.3).
const INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// The MD5 digest of every message, in order: what `Md5::digest` gives for each. With
/// AVX2 and two or more messages, 8 messages advance together a block at a time, one per
/// lane; a message whose full blocks are done leaves its lane (its tail and padding are
/// compressed scalar, a block or two) and the next message takes the lane, so messages of
/// different lengths keep every lane busy. For the aggregates of one request: the
/// format's checksum is most of the cost of encoding them.
pub(crate) fn digests(backend: Backend, messages: &[&[u8]]) -> Vec<[u8; 16]> {
    match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 if messages.len() >= 2 => digests_avx2(messages),
        _ => messages
            .iter()
            .map(|m| digest_from(INIT, m, m.len()))
            .collect(),
    }
}

/// Finishes the MD5 of a message of `total` bytes whose state after its leading full blocks
/// is `state` and whose remaining bytes are `rest`: the rest's full blocks, then the
/// padding (0x80, zeros, the length in bits) in one or two blocks.
fn digest_from(mut state: [u32; 4], rest: &[u8], total: usize) -> [u8; 16] {
    let (blocks, tail) = rest.as_chunks::<64>();
    md5::block_api::compress(&mut state, blocks);
    let mut pad = [0u8; 128];
    pad[..tail.len()].copy_from_slice(tail);
    pad[tail.len()] = 0x80;
    let end = if tail.len() < 56 { 64 } else { 128 };
    pad[end - 8..end].copy_from_slice(&(total as u64).wrapping_mul(8).to_le_bytes());
    md5::block_api::compress(&mut state, pad[..end].as_chunks::<64>().0);
    let mut digest = [0u8; 16];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_le_bytes());
    }
    digest
}

#[cfg(target_arch = "x86_64")]
fn digests_avx2(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    /// A lane's message: its index, and how many of its full blocks are done.
    #[derive(Clone, Copy)]
    struct Lane {
        message: usize,
        done: usize,
    }
    const IDLE: [u8; 64] = [0; 64];
    let full_blocks = |m: usize| messages[m].len() / 64;
    let mut out = vec![[0u8; 16]; messages.len()];
    let mut state = [[0u32; LANES]; 4];
    let mut lanes: [Option<Lane>; LANES] = [None; LANES];
    let mut next = 0;
    loop {
        // Fill idle lanes with the next messages; one without a full block is done at once.
        for (l, lane) in lanes.iter_mut().enumerate() {
            while lane.is_none() && next < messages.len() {
                let m = next;
                next += 1;
                if full_blocks(m) == 0 {
                    out[m] = digest_from(INIT, messages[m], messages[m].len());
                } else {
                    *lane = Some(Lane {
                        message: m,
                        done: 0,
                    });
                    for (w, init) in INIT.iter().enumerate() {
                        state[w][l] = *init;
                    }
                }
            }
        }
        // As many blocks as every busy lane still has.
        let Some(run) = lanes
            .iter()
            .flatten()
            .map(|lane| full_blocks(lane.message) - lane.done)
            .min()
        else {
            break;
        };
        for _ in 0..run {
            let blocks = lanes.map(|lane| match lane {
                Some(Lane { message, done }) => {
                    let start = done * 64;
                    messages[message][start..start + 64]
                        .try_into()
                        .expect("64-byte block")
                }
                None => &IDLE,
            });
            // SAFETY: the Avx2 backend is only chosen after AVX2 was detected.
            unsafe { avx2::compress_x8(&mut state, blocks) };
            for lane in lanes.iter_mut().flatten() {
                lane.done += 1;
            }
        }
        // Lanes whose full blocks are done: finish scalar, free the lane.
        for (l, lane) in lanes.iter_mut().enumerate() {
            if let Some(Lane { message, done }) = *lane
                && done == full_blocks(message)
            {
                let words = [state[0][l], state[1][l], state[2][l], state[3][l]];
                let m = messages[message];
                out[message] = digest_from(words, &m[done * 64..], m.len());
                *lane = None;
            }
        }
    }
    out
}

/// `HashKey::from_partition_key` on bytes already known to be a key's UTF-8.
#[cfg(target_arch = "x86_64")]
fn scalar_bytes(key: &[u8]) -> HashKey {
    use md5::{Digest, Md5};
    let digest: [u8; 16] = Md5::digest(key).into();
    HashKey(u128::from_be_bytes(digest))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_andnot_si256, _mm256_loadu_si256,
        _mm256_or_si256, _mm256_permute2x128_si256, _mm256_set1_epi32, _mm256_setr_epi8,
        _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_si256,
        _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32, _mm256_unpacklo_epi64,
        _mm256_xor_si256,
    };

    use super::{GROUPS, LANES, MAX_ONE_BLOCK_KEY};

    use super::INIT;

    /// The MD5 of each of 8 keys of at most 55 bytes, as big-endian `u128`s.
    ///
    /// Safe to call only where AVX2 is available (hence `#[target_feature]`, which makes
    /// calls from code without the feature `unsafe`).
    #[target_feature(enable = "avx2")]
    pub(super) fn md5_x8(keys: &[&[u8]; LANES]) -> [u128; LANES] {
        let [digests] = md5_groups(&[*keys]);
        digests
    }

    /// [`md5_x8`] of [`GROUPS`] groups of 8 keys, their steps interleaved: one group's
    /// MD5 is a chain of 64 dependent steps, and another independent chain fills the
    /// vector units while the first waits on its latencies.
    #[target_feature(enable = "avx2")]
    pub(super) fn md5_run(keys: &[[&[u8]; LANES]; GROUPS]) -> [[u128; LANES]; GROUPS] {
        md5_groups(keys)
    }

    /// The MD5 of `G` groups of 8 one-block keys, the groups' steps interleaved.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn md5_groups<const G: usize>(keys: &[[&[u8]; LANES]; G]) -> [[u128; LANES]; G] {
        // m[j][g]: message word j of group g's 8 keys, one key per lane.
        let mut m = [[_mm256_set1_epi32(0); G]; 16];
        for (g, keys) in keys.iter().enumerate() {
            let [lo, hi] = message_words(keys);
            for j in 0..8 {
                m[j][g] = lo[j];
                m[j + 8][g] = hi[j];
            }
        }
        let mut state = [
            [k(INIT[0]); G],
            [k(INIT[1]); G],
            [k(INIT[2]); G],
            [k(INIT[3]); G],
        ];
        compress(&mut state, m);
        let mut digests = [[0u128; LANES]; G];
        for (g, digests) in digests.iter_mut().enumerate() {
            *digests = to_hash_keys([state[0][g], state[1][g], state[2][g], state[3][g]]);
        }
        digests
    }

    /// MD5's compression of one 64-byte block per lane, in `G` groups of 8 lanes whose steps
    /// are interleaved: `m[j][g]` holds message word j of group g's lanes; `state` (a, b, c,
    /// d) is updated as RFC 1321 §3.4 says, the input state added to the result.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn compress<const G: usize>(state: &mut [[__m256i; G]; 4], m: [[__m256i; G]; 16]) {
        let [
            m0,
            m1,
            m2,
            m3,
            m4,
            m5,
            m6,
            m7,
            m8,
            m9,
            m10,
            m11,
            m12,
            m13,
            m14,
            m15,
        ] = m;
        let [mut a, mut b, mut c, mut d] = *state;

        // One MD5 step in every group: a = b + ((a + f(b, c, d) + k + m) <<< s).
        macro_rules! step {
            ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:ident, $k:literal, $s:literal) => {
                for g in 0..G {
                    let sum = add(add(add($m[g], k($k)), $a[g]), $f($b[g], $c[g], $d[g]));
                    $a[g] = add($b[g], rotl::<$s, { 32 - $s }>(sum));
                }
            };
        }
        // The four rounds of RFC 1321 §3.4: functions, message order, constants, shifts.
        step!(f, a, b, c, d, m0, 0xd76a_a478, 7);
        step!(f, d, a, b, c, m1, 0xe8c7_b756, 12);
        step!(f, c, d, a, b, m2, 0x2420_70db, 17);
        step!(f, b, c, d, a, m3, 0xc1bd_ceee, 22);
        step!(f, a, b, c, d, m4, 0xf57c_0faf, 7);
        step!(f, d, a, b, c, m5, 0x4787_c62a, 12);
        step!(f, c, d, a, b, m6, 0xa830_4613, 17);
        step!(f, b, c, d, a, m7, 0xfd46_9501, 22);
        step!(f, a, b, c, d, m8, 0x6980_98d8, 7);
        step!(f, d, a, b, c, m9, 0x8b44_f7af, 12);
        step!(f, c, d, a, b, m10, 0xffff_5bb1, 17);
        step!(f, b, c, d, a, m11, 0x895c_d7be, 22);
        step!(f, a, b, c, d, m12, 0x6b90_1122, 7);
        step!(f, d, a, b, c, m13, 0xfd98_7193, 12);
        step!(f, c, d, a, b, m14, 0xa679_438e, 17);
        step!(f, b, c, d, a, m15, 0x49b4_0821, 22);

        step!(g, a, b, c, d, m1, 0xf61e_2562, 5);
        step!(g, d, a, b, c, m6, 0xc040_b340, 9);
        step!(g, c, d, a, b, m11, 0x265e_5a51, 14);
        step!(g, b, c, d, a, m0, 0xe9b6_c7aa, 20);
        step!(g, a, b, c, d, m5, 0xd62f_105d, 5);
        step!(g, d, a, b, c, m10, 0x0244_1453, 9);
        step!(g, c, d, a, b, m15, 0xd8a1_e681, 14);
        step!(g, b, c, d, a, m4, 0xe7d3_fbc8, 20);
        step!(g, a, b, c, d, m9, 0x21e1_cde6, 5);
        step!(g, d, a, b, c, m14, 0xc337_07d6, 9);
        step!(g, c, d, a, b, m3, 0xf4d5_0d87, 14);
        step!(g, b, c, d, a, m8, 0x455a_14ed, 20);
        step!(g, a, b, c, d, m13, 0xa9e3_e905, 5);
        step!(g, d, a, b, c, m2, 0xfcef_a3f8, 9);
        step!(g, c, d, a, b, m7, 0x676f_02d9, 14);
        step!(g, b, c, d, a, m12, 0x8d2a_4c8a, 20);

        step!(h, a, b, c, d, m5, 0xfffa_3942, 4);
        step!(h, d, a, b, c, m8, 0x8771_f681, 11);
        step!(h, c, d, a, b, m11, 0x6d9d_6122, 16);
        step!(h, b, c, d, a, m14, 0xfde5_380c, 23);
        step!(h, a, b, c, d, m1, 0xa4be_ea44, 4);
        step!(h, d, a, b, c, m4, 0x4bde_cfa9, 11);
        step!(h, c, d, a, b, m7, 0xf6bb_4b60, 16);
        step!(h, b, c, d, a, m10, 0xbebf_bc70, 23);
        step!(h, a, b, c, d, m13, 0x289b_7ec6, 4);
        step!(h, d, a, b, c, m0, 0xeaa1_27fa, 11);
        step!(h, c, d, a, b, m3, 0xd4ef_3085, 16);
        step!(h, b, c, d, a, m6, 0x0488_1d05, 23);
        step!(h, a, b, c, d, m9, 0xd9d4_d039, 4);
        step!(h, d, a, b, c, m12, 0xe6db_99e5, 11);
        step!(h, c, d, a, b, m15, 0x1fa2_7cf8, 16);
        step!(h, b, c, d, a, m2, 0xc4ac_5665, 23);

        step!(i, a, b, c, d, m0, 0xf429_2244, 6);
        step!(i, d, a, b, c, m7, 0x432a_ff97, 10);
        step!(i, c, d, a, b, m14, 0xab94_23a7, 15);
        step!(i, b, c, d, a, m5, 0xfc93_a039, 21);
        step!(i, a, b, c, d, m12, 0x655b_59c3, 6);
        step!(i, d, a, b, c, m3, 0x8f0c_cc92, 10);
        step!(i, c, d, a, b, m10, 0xffef_f47d, 15);
        step!(i, b, c, d, a, m1, 0x8584_5dd1, 21);
        step!(i, a, b, c, d, m8, 0x6fa8_7e4f, 6);
        step!(i, d, a, b, c, m15, 0xfe2c_e6e0, 10);
        step!(i, c, d, a, b, m6, 0xa301_4314, 15);
        step!(i, b, c, d, a, m13, 0x4e08_11a1, 21);
        step!(i, a, b, c, d, m4, 0xf753_7e82, 6);
        step!(i, d, a, b, c, m11, 0xbd3a_f235, 10);
        step!(i, c, d, a, b, m2, 0x2ad7_d2bb, 15);
        step!(i, b, c, d, a, m9, 0xeb86_d391, 21);

        for g in 0..G {
            state[0][g] = add(state[0][g], a[g]);
            state[1][g] = add(state[1][g], b[g]);
            state[2][g] = add(state[2][g], c[g]);
            state[3][g] = add(state[3][g], d[g]);
        }
    }

    /// Compresses 8 blocks, one per lane, into the 8 lanes' states (`state[w][lane]`: word
    /// w of that lane's a, b, c, d): the step of [`digests`](super::digests) that moves
    /// every message one block on.
    #[target_feature(enable = "avx2")]
    pub(super) fn compress_x8(state: &mut [[u32; LANES]; 4], blocks: [&[u8; 64]; LANES]) {
        let mut lo = [_mm256_set1_epi32(0); LANES];
        let mut hi = [_mm256_set1_epi32(0); LANES];
        for (block, (lo, hi)) in blocks.iter().zip(lo.iter_mut().zip(&mut hi)) {
            // SAFETY: each pointer has 32 readable bytes behind it (the two halves of a
            // 64-byte array), the loads are unaligned ones (loadu), and any bit pattern is
            // a valid __m256i.
            unsafe {
                *lo = _mm256_loadu_si256(block[..32].as_ptr().cast());
                *hi = _mm256_loadu_si256(block[32..].as_ptr().cast());
            }
        }
        let (lo, hi) = (transpose(lo), transpose(hi));
        let mut m = [[_mm256_set1_epi32(0); 1]; 16];
        for j in 0..8 {
            m[j][0] = lo[j];
            m[j + 8][0] = hi[j];
        }
        let mut v = [[_mm256_set1_epi32(0); 1]; 4];
        for (v, words) in v.iter_mut().zip(state.iter()) {
            // SAFETY: `words` is 32 readable bytes; unaligned load.
            v[0] = unsafe { _mm256_loadu_si256(words.as_ptr().cast()) };
        }
        compress(&mut v, m);
        for (v, words) in v.iter().zip(state.iter_mut()) {
            // SAFETY: `words` is 32 writable bytes; unaligned store; any bits are u32s.
            unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v[0]) };
        }
    }

    /// Pads each key into its 64-byte block and transposes the 8 blocks: vector j of the
    /// result (words 0-7 in the first array, 8-15 in the second) holds message word j of
    /// every key, key i in lane i.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn message_words(keys: &[&[u8]; LANES]) -> [[__m256i; LANES]; 2] {
        let mut blocks = [[0u8; 64]; LANES];
        for (block, key) in blocks.iter_mut().zip(keys) {
            assert!(key.len() <= MAX_ONE_BLOCK_KEY, "one-block keys only");
            block[..key.len()].copy_from_slice(key);
            block[key.len()] = 0x80;
            block[56..].copy_from_slice(&(key.len() as u64 * 8).to_le_bytes());
        }
        // Row `lane` of `lo` holds words 0-7 of that key's block, of `hi` words 8-15.
        let mut lo = [_mm256_set1_epi32(0); LANES];
        let mut hi = [_mm256_set1_epi32(0); LANES];
        for (block, (lo, hi)) in blocks.iter().zip(lo.iter_mut().zip(&mut hi)) {
            // SAFETY: each pointer has 32 readable bytes behind it (the two halves of a
            // 64-byte array), the loads are unaligned ones (loadu), and any bit pattern is
            // a valid __m256i.
            unsafe {
                *lo = _mm256_loadu_si256(block[..32].as_ptr().cast());
                *hi = _mm256_loadu_si256(block[32..].as_ptr().cast());
            }
        }
        // Little-endian target: loading bytes gives MD5's little-endian message words.
        [transpose(lo), transpose(hi)]
    }

    /// Lays out the final a, b, c, d of 8 keys as each key's digest, the big-endian `u128`
    /// that [`HashKey`](crate::HashKey) holds.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn to_hash_keys(state: [__m256i; 4]) -> [u128; LANES] {
        let a = bswap32(state[0]);
        let b = bswap32(state[1]);
        let c = bswap32(state[2]);
        let d = bswap32(state[3]);
        // Per lane: d, c, b, a as little-endian words = the digest as a big-endian u128.
        let dc_lo = _mm256_unpacklo_epi32(d, c); // lanes 0 1 | 4 5
        let dc_hi = _mm256_unpackhi_epi32(d, c); // lanes 2 3 | 6 7
        let ba_lo = _mm256_unpacklo_epi32(b, a);
        let ba_hi = _mm256_unpackhi_epi32(b, a);
        let k04 = _mm256_unpacklo_epi64(dc_lo, ba_lo);
        let k15 = _mm256_unpackhi_epi64(dc_lo, ba_lo);
        let k26 = _mm256_unpacklo_epi64(dc_hi, ba_hi);
        let k37 = _mm256_unpackhi_epi64(dc_hi, ba_hi);
        let pairs = [
            _mm256_permute2x128_si256::<0x20>(k04, k15),
            _mm256_permute2x128_si256::<0x20>(k26, k37),
            _mm256_permute2x128_si256::<0x31>(k04, k15),
            _mm256_permute2x128_si256::<0x31>(k26, k37),
        ];
        let mut digests = [0u128; LANES];
        for (two, pair) in digests.chunks_exact_mut(2).zip(pairs) {
            // SAFETY: `two` is 32 writable bytes, the store is unaligned (storeu), and
            // every bit pattern is a valid pair of u128s.
            unsafe { _mm256_storeu_si256(two.as_mut_ptr().cast(), pair) };
        }
        digests
    }

    /// 8×8 transpose of u32s: row i word j becomes vector j lane i.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        // Within each 128-bit half: interleave pairs of rows, then pairs of pairs.
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        // u0 = rows 0-3 of words 0 | 4, u1: 1 | 5, u2: 2 | 6, u3: 3 | 7; u4-u7 rows 4-7.
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        // Join the halves: rows 0-3 from the first operand, rows 4-7 from the second.
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn add(x: __m256i, y: __m256i) -> __m256i {
        _mm256_add_epi32(x, y)
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn k(constant: u32) -> __m256i {
        _mm256_set1_epi32(constant as i32)
    }

    /// Rotate every lane left by `L` bits; `R` must be `32 - L` (stable Rust cannot
    /// compute it from `L` in a const generic argument).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn rotl<const L: i32, const R: i32>(x: __m256i) -> __m256i {
        _mm256_or_si256(_mm256_slli_epi32::<L>(x), _mm256_srli_epi32::<R>(x))
    }

    /// (x & y) | (!x & z), as z ^ (x & (y ^ z)): one fewer operation.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn f(x: __m256i, y: __m256i, z: __m256i) -> __m256i {
        _mm256_xor_si256(z, _mm256_and_si256(x, _mm256_xor_si256(y, z)))
    }

    /// (x & z) | (y & !z), as y ^ (z & (x ^ y)).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn g(x: __m256i, y: __m256i, z: __m256i) -> __m256i {
        _mm256_xor_si256(y, _mm256_and_si256(z, _mm256_xor_si256(x, y)))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn h(x: __m256i, y: __m256i, z: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_xor_si256(x, y), z)
    }

    /// y ^ (x | !z). `andnot(z, ones)` is !z.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn i(x: __m256i, y: __m256i, z: __m256i) -> __m256i {
        let not_z = _mm256_andnot_si256(z, _mm256_set1_epi32(-1));
        _mm256_xor_si256(y, _mm256_or_si256(x, not_z))
    }

    /// Reverse the bytes of every 32-bit lane.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn bswap32(x: __m256i) -> __m256i {
        #[rustfmt::skip]
        let order = _mm256_setr_epi8(
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
        );
        _mm256_shuffle_epi8(x, order)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn batch(backend: Backend, keys: &[&str]) -> Vec<HashKey> {
        let mut out = Vec::new();
        extend(backend, keys.iter().copied(), &mut out);
        out
    }

    fn one_by_one(keys: &[&str]) -> Vec<HashKey> {
        keys.iter()
            .map(|k| HashKey::from_partition_key(k))
            .collect()
    }

    /// RFC 1321 appendix A.5, plus a 43-byte classic and the one-block boundary.
    const VECTORS: [(&str, u128); 8] = [
        ("", 0xd41d8cd98f00b204e9800998ecf8427e),
        ("a", 0x0cc175b9c0f1b6a831c399e269772661),
        ("abc", 0x900150983cd24fb0d6963f7d28e17f72),
        ("message digest", 0xf96b697d7cb7938d525a2f31aaf161d0),
        (
            "abcdefghijklmnopqrstuvwxyz",
            0xc3fcd3d76192e4007dfb496cca67e13b,
        ),
        (
            "The quick brown fox jumps over the lazy dog",
            0x9e107d9d372bb6826bd81d3542a419d6,
        ),
        (
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            0xd174ab98d277d9f5a5611c2c9f419d9f,
        ),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            0x57edf4a22be3c955ac49da2e2107b67a,
        ),
    ];

    #[test]
    fn known_vectors_on_every_backend() {
        let keys: Vec<&str> = VECTORS.iter().map(|(k, _)| *k).collect();
        let expected: Vec<HashKey> = VECTORS.iter().map(|(_, h)| HashKey(*h)).collect();
        assert_eq!(one_by_one(&keys), expected);
        assert_eq!(batch(Backend::Scalar, &keys), expected);
        assert_eq!(batch(Backend::detect(), &keys), expected);
        // Twice over: 16 keys, so the one-block ones fill a whole run at least once.
        let doubled: Vec<&str> = keys.iter().chain(&keys).copied().collect();
        let twice: Vec<HashKey> = expected.iter().chain(&expected).copied().collect();
        assert_eq!(batch(Backend::detect(), &doubled), twice);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_lanes_match_known_vectors() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        assert_eq!(Backend::detect(), Backend::Avx2);
        // The six one-block vectors, in every lane position (rotations of the run).
        let one_block: Vec<(&str, u128)> = VECTORS
            .iter()
            .filter(|(k, _)| k.len() <= MAX_ONE_BLOCK_KEY)
            .copied()
            .chain([("", 0xd41d8cd98f00b204e9800998ecf8427e); 2])
            .collect();
        assert_eq!(one_block.len(), LANES);
        for shift in 0..LANES {
            let run: [&[u8]; LANES] =
                std::array::from_fn(|i| one_block[(i + shift) % LANES].0.as_bytes());
            // SAFETY: AVX2 was detected above.
            let got = unsafe { avx2::md5_x8(&run) };
            for (lane, digest) in got.iter().enumerate() {
                let (key, want) = one_block[(lane + shift) % LANES];
                assert_eq!(*digest, want, "lane {lane}, key {key:?}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn interleaved_groups_match_single_groups() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let owned: Vec<String> = (0..GROUPS * LANES).map(|i| "x".repeat(i * 3)).collect();
        let groups: [[&[u8]; LANES]; GROUPS] =
            std::array::from_fn(|g| std::array::from_fn(|i| owned[g * LANES + i].as_bytes()));
        // SAFETY: AVX2 was detected above.
        let together = unsafe { avx2::md5_run(&groups) };
        for (g, group) in groups.iter().enumerate() {
            // SAFETY: as above.
            assert_eq!(together[g], unsafe { avx2::md5_x8(group) });
            for (key, digest) in group.iter().zip(together[g]) {
                let key = std::str::from_utf8(key).unwrap();
                assert_eq!(HashKey(digest), HashKey::from_partition_key(key));
            }
        }
    }

    #[test]
    fn every_tail_size() {
        // 0 to 40 one-block keys, each count with and without long keys in between: every
        // number of full runs, full groups and leftover keys (scalar or padded).
        let owned: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
        let long = "L".repeat(MAX_ONE_BLOCK_KEY + 1);
        for n in 0..=owned.len() {
            let plain: Vec<&str> = owned[..n].iter().map(String::as_str).collect();
            let mut mixed = Vec::new();
            for (i, key) in plain.iter().enumerate() {
                if i % 5 == 2 {
                    mixed.push(long.as_str());
                }
                mixed.push(key);
            }
            for keys in [&plain, &mixed] {
                assert_eq!(batch(Backend::detect(), keys), one_by_one(keys), "{n} keys");
            }
        }
    }

    #[test]
    fn one_block_boundary() {
        // 55 bytes is the longest one-block key, 56 the shortest two-block one.
        let lengths = [
            0, 1, 3, 4, 5, 31, 32, 33, 54, 55, 56, 57, 63, 64, 65, 119, 120,
        ];
        let owned: Vec<String> = lengths.iter().map(|&n| "k".repeat(n)).collect();
        let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
        for backend in [Backend::Scalar, Backend::detect()] {
            assert_eq!(batch(backend, &keys), one_by_one(&keys), "{backend:?}");
        }
    }

    #[test]
    fn appends_after_existing_output() {
        let mut out = vec![HashKey(7)];
        let keys = ["a"; 9];
        extend(Backend::detect(), keys, &mut out);
        assert_eq!(out.len(), 10);
        assert_eq!(out[0], HashKey(7));
        assert!(
            out[1..]
                .iter()
                .all(|h| *h == HashKey::from_partition_key("a"))
        );
    }

    /// Keys of 1 to 300 bytes: short ASCII (the common case, one block), keys around the
    /// 55-byte boundary, and any Unicode (multi-byte UTF-8, up to 75 chars × 4 bytes).
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9-]{1,40}",
            2 => "[a-z]{50,60}",
            2 => "\\PC{1,20}",
            1 => "\\PC{40,75}",
            1 => "[a-z]{200,300}",
        ]
    }

    proptest! {
        #[test]
        fn batch_equals_one_by_one(keys in proptest::collection::vec(key(), 0..=40)) {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let expected = one_by_one(&keys);
            prop_assert_eq!(&batch(Backend::detect(), &keys), &expected);
            prop_assert_eq!(&batch(Backend::Scalar, &keys), &expected);
        }

        #[test]
        fn digests_of_many_messages_equal_one_by_one(
            messages in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..=700),
                0..=20,
            )
        ) {
            let messages: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let expected = md5_each(&messages);
            prop_assert_eq!(&digests(Backend::detect(), &messages), &expected);
            prop_assert_eq!(&digests(Backend::Scalar, &messages), &expected);
        }
    }

    fn md5_each(messages: &[&[u8]]) -> Vec<[u8; 16]> {
        use md5::{Digest, Md5};
        messages.iter().map(|m| Md5::digest(m).into()).collect()
    }

    #[test]
    fn digests_of_aggregate_sized_messages_of_every_length_mix() {
        // Lanes run out of blocks at different times and take the next message: lengths
        // around the block and padding boundaries, long and short mixed, more than 8.
        let mut lengths = vec![51_200, 3, 51_100, 64, 128, 55, 56, 63, 119, 120, 0];
        lengths.extend([40_000, 51_199, 1, 9_000, 51_201, 700, 65, 4_096, 50_000]);
        let data: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j * 7) as u8).collect())
            .collect();
        let messages: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let expected = md5_each(&messages);
        assert_eq!(digests(Backend::detect(), &messages), expected);
        // Every count from 0 to 20, so that idle lanes and a lone message are covered.
        for n in 0..=messages.len() {
            assert_eq!(digests(Backend::detect(), &messages[..n]), expected[..n]);
        }
        // RFC 1321's vectors through the same path.
        let texts: Vec<&[u8]> = VECTORS.iter().map(|(t, _)| t.as_bytes()).collect();
        let want: Vec<[u8; 16]> = VECTORS.iter().map(|(_, h)| h.to_be_bytes()).collect();
        assert_eq!(digests(Backend::detect(), &texts), want);
    }
}

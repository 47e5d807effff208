//! A record's key and data inside the producer: the caller's own allocations (`put`), or
//! views into one buffer shared by a `put_batch` chunk.
//!
//! ```text
//!  put        Record { String, Bytes } ───────────────────────────► Payload::Owned
//!  put_batch  Record { String, Bytes } ─ copy key ‖ data ─► chunk buffer (BytesMut)
//!                    └─ dropped at once, on the caller's thread    │ frozen when the chunk
//!                                                                  ▼ is handed over
//!                                               Payload::Shared { buffer, ranges } × n
//!  retry / map change ─► Payload::Owned (copied out, so a long-lived record does not keep a
//!                        whole chunk's buffer alive)
//! ```
//!
//! Why copy: the engine runs on another thread than the caller. Freeing the caller's two
//! small allocations per record there cost more than the whole aggregation format once MD5
//! ran eight lanes at a time: with glibc, small chunks freed by another thread pile up in
//! the allocating thread's arena and are consolidated on its next large allocation
//! (measured: 0.15 µs per record, `docs/BENCHMARKS.md`). Dropped right after the copy, on
//! the thread that allocated them, they go back to its cache and serve the caller's next
//! records; the engine then frees one buffer per chunk.

use std::ops::Range;

use bytes::Bytes;
use kinesis_aggregation::{HashKey, UserRecord};

/// A record's partition key, explicit hash key and data.
#[derive(Debug)]
pub(crate) struct Payload(Inner);

/// Private, so that only this module makes a `Shared` record: its key range holds bytes
/// copied from a `String` (see [`Payload::partition_key`]).
#[derive(Debug)]
enum Inner {
    /// The caller's own allocations.
    Owned(UserRecord),
    /// Key and data in a buffer shared by the records of one `put_batch` chunk. The
    /// buffer is empty until the chunk is handed over ([`Payload::attach`]).
    Shared {
        buffer: Bytes,
        key: Range<u32>,
        data: Range<u32>,
        explicit_hash_key: Option<HashKey>,
    },
}

use Inner::{Owned, Shared};

impl Payload {
    /// The caller's own record, as it is.
    pub(crate) fn owned(user: UserRecord) -> Payload {
        Payload(Owned(user))
    }

    /// Whether the record has its own allocations (not a view into a chunk buffer).
    #[cfg(test)]
    fn is_owned(&self) -> bool {
        matches!(self.0, Owned(_))
    }

    /// Copies `user`'s key and data to the end of `chunk`, dropping its allocations.
    pub(crate) fn copy_into(user: UserRecord, chunk: &mut bytes::BytesMut) -> Payload {
        let (key, explicit_hash_key, data) = user.into_parts();
        let at = |n: usize| u32::try_from(n).expect("chunk buffers stay far below 4 GiB");
        let k0 = at(chunk.len());
        chunk.extend_from_slice(key.as_bytes());
        let d0 = at(chunk.len());
        chunk.extend_from_slice(&data);
        let d1 = at(chunk.len());
        Payload(Shared {
            buffer: Bytes::new(),
            key: k0..d0,
            data: d0..d1,
            explicit_hash_key,
        })
    }

    /// Points a copied record at its chunk's buffer, now frozen.
    pub(crate) fn attach(&mut self, chunk: &Bytes) {
        if let Shared { buffer, key, .. } = &mut self.0 {
            // Checked once here, so that reading the key later need not check again.
            let bytes = &chunk[key.start as usize..key.end as usize];
            assert!(
                std::str::from_utf8(bytes).is_ok(),
                "a record's chunk buffer must be the one its key was copied into"
            );
            *buffer = chunk.clone();
        }
    }

    /// The record with its own allocations, releasing its share of a chunk buffer.
    pub(crate) fn detach(&mut self) {
        if let Shared { .. } = self.0 {
            let (key, ehk, data) = std::mem::replace(self, Payload::empty()).into_parts();
            let user = UserRecord::new(key, data).expect("validated when it was put");
            self.0 = Owned(match ehk {
                Some(k) => user.with_explicit_hash_key(k),
                None => user,
            });
        }
    }

    fn empty() -> Payload {
        Payload(Shared {
            buffer: Bytes::new(),
            key: 0..0,
            data: 0..0,
            explicit_hash_key: None,
        })
    }

    pub(crate) fn partition_key(&self) -> &str {
        match &self.0 {
            Owned(u) => u.partition_key(),
            Shared { buffer, key, .. } => {
                let bytes = &buffer[key.start as usize..key.end as usize];
                // SAFETY: a `Shared` record (made only in this module: `Inner` is private)
                // has either an empty buffer, where the slice above panics for any key but
                // the empty one, which is valid UTF-8; or the buffer `attach` set after
                // checking that this range of it is UTF-8. `Bytes` never changes its
                // contents, and the range never changes. Checking again on every read cost
                // 5 % of the CPU per record (hash, key table, encoding each read the key).
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
        }
    }

    pub(crate) fn explicit_hash_key(&self) -> Option<HashKey> {
        match &self.0 {
            Owned(u) => u.explicit_hash_key(),
            Shared {
                explicit_hash_key, ..
            } => *explicit_hash_key,
        }
    }

    pub(crate) fn data(&self) -> &[u8] {
        match &self.0 {
            Owned(u) => u.data(),
            Shared { buffer, data, .. } => &buffer[data.start as usize..data.end as usize],
        }
    }

    /// The data as `Bytes`: the caller's own, or a slice of the chunk buffer.
    pub(crate) fn data_bytes(&self) -> Bytes {
        match &self.0 {
            Owned(u) => u.data().clone(),
            Shared { buffer, data, .. } => buffer.slice(data.start as usize..data.end as usize),
        }
    }

    /// `(partition_key, explicit_hash_key, data)`, to hand the record back: with its own
    /// copy of the data, so that a record kept by the caller (to put again later, say) does
    /// not keep a whole chunk's buffer alive.
    pub(crate) fn into_parts(self) -> (String, Option<HashKey>, Bytes) {
        match self.0 {
            Owned(u) => u.into_parts(),
            Shared { .. } => (
                self.partition_key().to_owned(),
                self.explicit_hash_key(),
                Bytes::copy_from_slice(self.data()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "the one its key was copied into")]
    fn a_key_is_never_read_from_another_buffer() {
        let mut chunk = bytes::BytesMut::new();
        let mut p = Payload::copy_into(UserRecord::new("ab", &b"x"[..]).unwrap(), &mut chunk);
        p.attach(&Bytes::from_static(&[0xff, 0xfe, 0]));
    }

    #[test]
    fn a_copied_record_reads_back_and_detaches_unchanged() {
        let mut chunk = bytes::BytesMut::new();
        let a = UserRecord::new("ключ-a", &b"first"[..]).unwrap();
        let b = UserRecord::new("b", &b""[..])
            .unwrap()
            .with_explicit_hash_key(HashKey(7));
        let mut pa = Payload::copy_into(a, &mut chunk);
        let mut pb = Payload::copy_into(b, &mut chunk);
        let c = UserRecord::new("c", vec![9u8; 100]).unwrap();
        let mut pc = Payload::copy_into(c, &mut chunk);
        let frozen = chunk.freeze();
        for p in [&mut pa, &mut pb, &mut pc] {
            p.attach(&frozen);
        }
        assert_eq!(
            (pa.partition_key(), pa.data(), pa.explicit_hash_key()),
            ("ключ-a", &b"first"[..], None)
        );
        assert_eq!(pb.explicit_hash_key(), Some(HashKey(7)));
        assert_eq!(pb.data_bytes(), Bytes::new());
        pa.detach();
        assert!(pa.is_owned());
        assert_eq!(
            pa.into_parts(),
            ("ключ-a".to_owned(), None, Bytes::from_static(b"first"))
        );
        // Handed back with its own copy, not a slice of the chunk's buffer.
        let (_, _, data) = pc.into_parts();
        assert_eq!(data, vec![9u8; 100]);
        let buffer = frozen.as_ptr() as usize..frozen.as_ptr() as usize + frozen.len();
        assert!(!buffer.contains(&(data.as_ptr() as usize)));
        assert_eq!(
            pb.into_parts(),
            ("b".to_owned(), Some(HashKey(7)), Bytes::new())
        );
    }
}

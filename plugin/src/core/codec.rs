//! The bytes of values in shared data: postcard 1's format, written by hand.
//!
//! serde and postcard with their derives cost the .wasm about 14 KB (docs/module-size.md) for a
//! dozen plain structs. This writes and reads exactly postcard's bytes, so values written by a
//! module built with postcard read the same here and the other way round (workers of one Envoy
//! share the data; a module update meets what the old module wrote): unsigned integers as LEB128
//! varints, signed ones zigzagged first, `bool` and `Option`'s tag as one byte 0 or 1, strings and
//! sequences as a varint length then their contents, arrays and struct fields one after another.
//! A read fails where postcard's failed (cut off, a varint too long, a tag other than 0 or 1,
//! a string that is not UTF-8) and, as postcard's `from_bytes`, ignores bytes after the value.
//! Tests compare both over generated values and damaged bytes (`tests`).

/// A value stored in shared data.
pub trait Stored: Sized {
    /// Appends the value's bytes.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads one value from the front of `r`; None where postcard refused the bytes.
    fn take(r: &mut Reader) -> Option<Self>;
}

/// The value's bytes.
pub fn encode<T: Stored>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.put(&mut out);
    out
}

/// The value `bytes` starts with; None where postcard refused them.
pub fn decode<T: Stored>(bytes: &[u8]) -> Option<T> {
    T::take(&mut Reader { bytes })
}

/// What is left to read.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }

    /// A varint of a type `max_bytes` long at most, whose last byte may be `last_max` at most
    /// (postcard's check that the value fits its type).
    fn varint(&mut self, max_bytes: u32, last_max: u8) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f)
                .checked_shl(i.saturating_mul(7))
                .unwrap_or(0);
            if b & 0x80 == 0 {
                return (i.saturating_add(1) < max_bytes || b <= last_max).then_some(out);
            }
        }
        None
    }

    pub fn u32(&mut self) -> Option<u32> {
        // 5 bytes; 4 bits left for the last one.
        u32::try_from(self.varint(5, 0x0f)?).ok()
    }

    pub fn u64(&mut self) -> Option<u64> {
        self.varint(10, 0x01)
    }

    /// A length: postcard reads a `usize`, whose varint is as long as the pointer.
    pub fn length(&mut self) -> Option<usize> {
        #[cfg(target_pointer_width = "32")]
        let n = u64::from(self.u32()?);
        #[cfg(not(target_pointer_width = "32"))]
        let n = self.u64()?;
        usize::try_from(n).ok()
    }

    /// A length, then that many bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.length()?;
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    /// At most what is left: a damaged length must not reserve gigabytes (every stored element
    /// takes at least one byte).
    fn capacity(&self, n: usize) -> usize {
        n.min(self.bytes.len())
    }
}

pub fn put_varint(mut n: u64, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A length or byte string's length (`usize`; the same varint as a u64 of that value).
pub fn put_len(n: usize, out: &mut Vec<u8>) {
    put_varint(n as u64, out);
}

/// A byte string: its length, then the bytes (postcard's `serialize_bytes`, the same bytes as
/// a sequence of u8).
pub fn put_bytes(b: &[u8], out: &mut Vec<u8>) {
    put_len(b.len(), out);
    out.extend_from_slice(b);
}

impl Stored for u32 {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(u64::from(*self), out);
    }
    fn take(r: &mut Reader) -> Option<Self> {
        r.u32()
    }
}

impl Stored for u64 {
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(*self, out);
    }
    fn take(r: &mut Reader) -> Option<Self> {
        r.u64()
    }
}

impl Stored for i64 {
    fn put(&self, out: &mut Vec<u8>) {
        // Zigzag: 0, -1, 1, -2, … as 0, 1, 2, 3, …
        put_varint(((*self << 1) ^ (*self >> 63)) as u64, out);
    }
    fn take(r: &mut Reader) -> Option<Self> {
        let n = r.u64()?;
        Some(((n >> 1) as i64) ^ ((n & 1).wrapping_neg() as i64))
    }
}

impl Stored for bool {
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn take(r: &mut Reader) -> Option<Self> {
        match r.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

impl Stored for String {
    fn put(&self, out: &mut Vec<u8>) {
        put_bytes(self.as_bytes(), out);
    }
    fn take(r: &mut Reader) -> Option<Self> {
        let b = r.bytes()?;
        std::str::from_utf8(b).ok().map(str::to_owned)
    }
}

impl<T: Stored> Stored for Option<T> {
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
    fn take(r: &mut Reader) -> Option<Self> {
        match r.byte()? {
            0 => Some(None),
            1 => T::take(r).map(Some),
            _ => None,
        }
    }
}

impl<T: Stored> Stored for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        put_len(self.len(), out);
        for v in self {
            v.put(out);
        }
    }
    fn take(r: &mut Reader) -> Option<Self> {
        let n = r.length()?;
        let mut v = Vec::with_capacity(r.capacity(n));
        for _ in 0..n {
            v.push(T::take(r)?);
        }
        Some(v)
    }
}

/// An array: its elements one after another, no length (postcard's tuple).
impl<const N: usize> Stored for [u32; N] {
    fn put(&self, out: &mut Vec<u8>) {
        for v in self {
            v.put(out);
        }
    }
    fn take(r: &mut Reader) -> Option<Self> {
        let mut a = [0u32; N];
        for v in &mut a {
            *v = r.u32()?;
        }
        Some(a)
    }
}

/// `Stored` for a struct: its fields, listed in declaration order (postcard's order).
macro_rules! stored_struct {
    ($t:ty { $($field:ident),+ $(,)? }) => {
        impl $crate::core::codec::Stored for $t {
            fn put(&self, out: &mut Vec<u8>) {
                $( $crate::core::codec::Stored::put(&self.$field, out); )+
            }
            fn take(r: &mut $crate::core::codec::Reader) -> Option<Self> {
                // Struct expressions evaluate their fields in the order written.
                Some(Self { $( $field: $crate::core::codec::Stored::take(r)?, )+ })
            }
        }
    };
}
pub(crate) use stored_struct;

/// Test support: the codec against postcard, for every stored type.
#[cfg(test)]
pub mod check {
    use super::*;
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use std::fmt::Debug;

    /// A small deterministic generator (xorshift64*): the same cases on every run.
    pub struct Gen(pub u64);

    impl Gen {
        pub fn word(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.word() % n.max(1) as u64) as usize
        }
        /// Integers of every varint length, edges included.
        pub fn u64(&mut self) -> u64 {
            match self.below(4) {
                0 => self.below(300) as u64,
                1 => [0, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX][self.below(7)],
                _ => self.word() >> self.below(64),
            }
        }
        pub fn u32(&mut self) -> u32 {
            self.u64() as u32
        }
        pub fn i64(&mut self) -> i64 {
            self.u64() as i64
        }
        pub fn bool(&mut self) -> bool {
            self.word() & 1 == 1
        }
        pub fn string(&mut self) -> String {
            let n = if self.below(10) == 0 {
                200
            } else {
                self.below(12)
            };
            (0..n)
                .map(|_| ['a', '0', '.', ':', 'é', '€', '\u{10348}'][self.below(7)])
                .collect()
        }
    }

    /// `value` encodes to postcard's bytes; those bytes, cut, flipped and extended, decode
    /// (or fail) as postcard decodes them.
    pub fn same_as_postcard<T>(g: &mut Gen, value: &T)
    where
        T: Stored + Serialize + DeserializeOwned + Debug + PartialEq,
    {
        let ours = encode(value);
        let theirs = postcard::to_allocvec(value).unwrap();
        assert_eq!(ours, theirs, "{value:?}");
        assert_eq!(decode::<T>(&ours).as_ref(), Some(value));
        for _ in 0..20 {
            let mut b = ours.clone();
            match g.below(4) {
                0 => b.truncate(g.below(b.len() + 1)),
                1 if !b.is_empty() => {
                    let at = g.below(b.len());
                    b[at] = [0, 1, 2, 0x7f, 0x80, 0xff, g.word() as u8][g.below(7)];
                }
                2 => b.insert(g.below(b.len() + 1), g.word() as u8),
                _ => b.extend((0..g.below(4)).map(|_| g.word() as u8)),
            }
            assert_eq!(
                decode::<T>(&b),
                postcard::from_bytes::<T>(&b).ok(),
                "{b:?} (from {value:?})"
            );
        }
    }

    /// Random bytes decode as postcard decodes them.
    pub fn noise_as_postcard<T>(g: &mut Gen)
    where
        T: Stored + DeserializeOwned + Debug + PartialEq,
    {
        let b: Vec<u8> = (0..g.below(40))
            .map(|_| match g.below(3) {
                0 => g.below(3) as u8,
                1 => 0x80 | g.word() as u8,
                _ => g.word() as u8,
            })
            .collect();
        assert_eq!(decode::<T>(&b), postcard::from_bytes::<T>(&b).ok(), "{b:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::check::*;
    use super::*;

    #[test]
    fn scalars_and_containers_are_postcards_bytes() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3_000 {
            let v = g.u64();
            same_as_postcard(&mut g, &v);
            let v = g.u32();
            same_as_postcard(&mut g, &v);
            let v = g.i64();
            same_as_postcard(&mut g, &v);
            let v = g.bool();
            same_as_postcard(&mut g, &v);
            let v = g.string();
            same_as_postcard(&mut g, &v);
            let v = (g.bool()).then(|| g.u64());
            same_as_postcard(&mut g, &v);
            let v: Vec<String> = (0..g.below(5)).map(|_| g.string()).collect();
            same_as_postcard(&mut g, &v);
            let v = [g.u32(), g.u32(), g.u32()];
            same_as_postcard(&mut g, &v);
            noise_as_postcard::<u32>(&mut g);
            noise_as_postcard::<u64>(&mut g);
            noise_as_postcard::<i64>(&mut g);
            noise_as_postcard::<bool>(&mut g);
            noise_as_postcard::<String>(&mut g);
            noise_as_postcard::<Option<u32>>(&mut g);
            noise_as_postcard::<Vec<u64>>(&mut g);
            noise_as_postcard::<[u32; 6]>(&mut g);
        }
    }

    /// Every type the filter stores, as postcard and its derives wrote and read it.
    #[test]
    fn stored_types_are_postcards_bytes() {
        use crate::core::demand::Entry;
        use crate::core::etcd::Mirrored;
        use crate::core::etcd::{Claim, Snapshot, State};
        use crate::core::lease::Lease;
        use crate::core::registry::Count;
        use crate::core::registry::SetMembers;
        use crate::core::registry::Slot;

        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        fn mirrored(g: &mut Gen) -> Mirrored {
            Mirrored {
                pool: g.string(),
                app: g.string(),
                version: g.string(),
                address: g.string(),
            }
        }
        for _ in 0..1_000 {
            let slots: Vec<Slot> = (0..g.below(4))
                .map(|_| Slot {
                    pool: g.string(),
                    app: g.string(),
                    address: g.string(),
                    version: g.string(),
                    first_seen_ms: g.u64(),
                    last_seen_ms: g.u64(),
                    etcd: g.bool(),
                    index_pending: g.bool(),
                })
                .collect();
            same_as_postcard(&mut g, &slots);
            let entries: Vec<Entry> = (0..g.below(3))
                .map(|_| Entry {
                    pool: g.string(),
                    app: g.string(),
                    version: g.string(),
                    last_needed_ms: g.u64(),
                    period: g.u64(),
                    counts: std::array::from_fn(|_| g.u32()),
                })
                .collect();
            same_as_postcard(&mut g, &entries);
            let snapshot = Snapshot {
                records: (0..g.below(4)).map(|_| mirrored(&mut g)).collect(),
            };
            let b = encode(&snapshot);
            assert_eq!(b, postcard::to_allocvec(&snapshot).unwrap());
            assert_eq!(
                decode::<Snapshot>(&b).map(|s| s.records),
                Some(snapshot.records)
            );
            let state = State {
                revision: g.i64(),
                verified_ms: g.u64(),
                applying: g.bool().then(|| Claim {
                    revision: g.i64(),
                    since_ms: g.u64(),
                }),
            };
            same_as_postcard(&mut g, &state);
            let count = Count {
                n: g.u64(),
                changed_ms: g.u64(),
            };
            same_as_postcard(&mut g, &count);
            let lease = Lease {
                owner: g.u32(),
                expires_ms: g.u64(),
                next_due_ms: g.u64(),
            };
            same_as_postcard(&mut g, &lease);
            let sets: Vec<SetMembers> = (0..g.below(3))
                .map(|_| SetMembers {
                    pool: g.string(),
                    app: g.string(),
                    version: g.string(),
                    members: (0..g.below(300)).map(|_| g.word() as u8).collect(),
                })
                .collect();
            same_as_postcard(&mut g, &sets);
            noise_as_postcard::<Vec<Slot>>(&mut g);
            noise_as_postcard::<Vec<Entry>>(&mut g);
            noise_as_postcard::<State>(&mut g);
            noise_as_postcard::<Lease>(&mut g);
            noise_as_postcard::<Vec<SetMembers>>(&mut g);
            noise_as_postcard::<Vec<Mirrored>>(&mut g);
        }
    }

    #[test]
    fn varint_edges() {
        // Non-canonical but in range: accepted, as postcard does.
        assert_eq!(decode::<u32>(&[0x80, 0x00]), Some(0));
        // The fifth byte of a u32 may carry 4 bits, the tenth of a u64 one.
        assert_eq!(
            decode::<u32>(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Some(u32::MAX)
        );
        assert_eq!(decode::<u32>(&[0xff, 0xff, 0xff, 0xff, 0x10]), None);
        assert_eq!(decode::<u32>(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), None);
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(decode::<u64>(&max), Some(u64::MAX));
        *max.last_mut().unwrap() = 0x02;
        assert_eq!(decode::<u64>(&max), None);
        assert_eq!(decode::<u64>(&[]), None);
        assert_eq!(
            decode::<u32>(&[5, 9, 9]),
            Some(5),
            "bytes after the value are ignored"
        );
    }
}

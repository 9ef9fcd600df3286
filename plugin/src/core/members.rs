//! A members list in shared data: addresses joined by `\n`, not postcard. Measured at 5,000
//! members (bench/registry.md): decoding postcard's `Vec<String>` allocates once per member and
//! made the first lookup after a change cost ~330 µs; splitting one buffer does not, and a join
//! appends instead of re-encoding the list.

use crate::core::store::{RegistryError, SharedStore, StoreError, CREATE_CAS};
use std::collections::HashSet;

/// A decoded list: one buffer and the span of each member.
#[derive(Debug, Default, Clone)]
pub struct Members {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl Members {
    pub fn parse(bytes: &[u8]) -> Members {
        Members::from_vec(bytes.to_vec())
    }

    /// Takes the buffer the store handed out, without copying it again.
    /// Members are checked as UTF-8 one at a time when read (a non-UTF-8 one is skipped), so a
    /// lookup does not validate the whole list first.
    pub fn from_vec(bytes: Vec<u8>) -> Members {
        let b = bytes.as_slice();
        // Addresses are ~15-25 bytes: reserve once instead of growing.
        let mut spans = Vec::with_capacity(b.len() / 16 + 1);
        let mut start = 0usize;
        for (i, c) in b.iter().enumerate() {
            if *c == b'\n' {
                push_span(&mut spans, start, i);
                start = i + 1;
            }
        }
        push_span(&mut spans, start, b.len());
        Members { bytes, spans }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let (s, e) = self.spans.get(i)?;
        let slice = self
            .bytes
            .get(usize::try_from(*s).ok()?..usize::try_from(*e).ok()?)?;
        std::str::from_utf8(slice).ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

fn push_span(spans: &mut Vec<(u32, u32)>, start: usize, end: usize) {
    if end > start {
        if let (Ok(s), Ok(e)) = (u32::try_from(start), u32::try_from(end)) {
            spans.push((s, e));
        }
    }
}

fn contains(bytes: &[u8], item: &str) -> bool {
    bytes.split(|b| *b == b'\n').any(|l| l == item.as_bytes())
}

/// CAS read-modify-write of the raw bytes of `key`.
fn modify_raw<S, F>(store: &mut S, key: &str, mut f: F) -> Result<bool, RegistryError>
where
    S: SharedStore + ?Sized,
    F: FnMut(&mut Vec<u8>) -> bool,
{
    for _ in 0..32 {
        let (mut bytes, cas) = match store.get(key) {
            Ok(Some((b, cas))) => (b, cas),
            Ok(None) => (Vec::new(), CREATE_CAS),
            Err(_) => return Err(RegistryError::Store),
        };
        if std::str::from_utf8(&bytes).is_err() {
            bytes.clear();
        }
        if !f(&mut bytes) {
            return Ok(false);
        }
        match store.set(key, &bytes, cas) {
            Ok(()) => return Ok(true),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return Err(RegistryError::Store),
        }
    }
    Err(RegistryError::Busy)
}

/// Adds each of `items` not yet listed, in one write.
pub fn add<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    items: &[&str],
) -> Result<(), RegistryError> {
    modify_raw(store, key, |bytes| {
        let mut changed = false;
        // A batch (an etcd snapshot) checks against a set; one address scans the list.
        let mut listed: Option<HashSet<Vec<u8>>> =
            (items.len() > 4).then(|| bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect());
        for item in items {
            if item.is_empty() || item.contains('\n') {
                continue;
            }
            let known = match &mut listed {
                Some(set) => !set.insert(item.as_bytes().to_vec()),
                None => contains(bytes, item),
            };
            if known {
                continue;
            }
            if !bytes.is_empty() {
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(item.as_bytes());
            changed = true;
        }
        changed
    })
    .map(drop)
}

/// Removes each of `items`, in one write.
pub fn remove<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    items: &[&str],
) -> Result<(), RegistryError> {
    modify_raw(store, key, |bytes| {
        let before = bytes.len();
        let gone: HashSet<&[u8]> = items.iter().map(|i| i.as_bytes()).collect();
        let kept: Vec<&[u8]> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty() && !gone.contains(l))
            .collect();
        let joined = kept.join(&b'\n');
        let changed = joined.len() != before;
        *bytes = joined;
        changed
    })
    .map(drop)
}

/// The list of `key`, decoded.
pub fn read<S: SharedStore + ?Sized>(store: &mut S, key: &str) -> Result<Members, RegistryError> {
    match store.get(key) {
        Ok(Some((bytes, _))) => Ok(Members::from_vec(bytes)),
        Ok(None) => Ok(Members::default()),
        Err(_) => Err(RegistryError::Store),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::core::store::MemoryStore;

    #[test]
    fn add_remove_and_parse() {
        let mut s = MemoryStore::default();
        add(&mut s, "m", &["10.0.0.1:80", "[::1]:80"]).unwrap();
        add(&mut s, "m", &["10.0.0.1:80", "10.0.0.2:80"]).unwrap();
        assert_eq!(
            read(&mut s, "m").unwrap().to_vec(),
            vec!["10.0.0.1:80", "[::1]:80", "10.0.0.2:80"]
        );
        remove(&mut s, "m", &["[::1]:80", "10.0.0.9:80"]).unwrap();
        let m = read(&mut s, "m").unwrap();
        assert_eq!(m.to_vec(), vec!["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(m.get(1), Some("10.0.0.2:80"));
        remove(&mut s, "m", &["10.0.0.1:80", "10.0.0.2:80"]).unwrap();
        assert!(read(&mut s, "m").unwrap().is_empty());
        s.writes = 0;
        remove(&mut s, "m", &["10.0.0.1:80"]).unwrap();
        assert_eq!(s.writes, 0, "no change, no write");
    }

    #[test]
    fn a_prefix_is_not_a_member() {
        let mut s = MemoryStore::default();
        add(&mut s, "m", &["10.0.0.1:8080"]).unwrap();
        add(&mut s, "m", &["10.0.0.1:80"]).unwrap();
        assert_eq!(read(&mut s, "m").unwrap().len(), 2);
    }

    #[test]
    fn garbage_reads_as_empty() {
        assert!(Members::parse(b"\xff\xfe").iter().next().is_none());
        let mut s = MemoryStore::default();
        s.set("m", b"\xff", 0).unwrap();
        add(&mut s, "m", &["10.0.0.1:80"]).unwrap();
        assert_eq!(read(&mut s, "m").unwrap().to_vec(), vec!["10.0.0.1:80"]);
    }
}

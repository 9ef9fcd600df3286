//! Proxy-wasm shared data as the core sees it: a key-value store with Envoy's CAS rules, and the
//! retried compare-and-swap read-modify-write every registry write goes through.

use crate::core::codec::{self, Stored};
use std::collections::HashMap;

/// The store: proxy-wasm shared data in the filter, a map in tests and benchmarks.
pub trait SharedStore {
    /// The value and CAS of `key`, None when the key was never written.
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the key's CAS is still `cas` (see `CREATE_CAS`).
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryError {
    /// `max_records` reached and the address is new.
    Full,
    /// Too many CAS mismatches in a row.
    Busy,
    /// The host refused a shared-data call.
    Store,
}

/// The CAS used to create a key that was absent. Envoy writes unconditionally with CAS 0; with
/// CAS `u32::MAX` it writes to an absent key and refuses an existing one (docs/envoy-facts.md#shared-data-ticks-metrics): two
/// workers creating the same key cannot overwrite each other.
pub const CREATE_CAS: u32 = u32::MAX;

/// How often a read-modify-write is retried on CAS mismatches before giving up.
const MAX_TRIES: usize = 32;

pub fn decode<T: Stored + Default>(bytes: &[u8]) -> T {
    // An empty value is a key emptied by a writer (the ABI has no delete); garbage is treated
    // the same way and gets overwritten at the next write instead of wedging the registry.
    if bytes.is_empty() {
        return T::default();
    }
    codec::decode(bytes).unwrap_or_default()
}

pub fn read<T: Stored + Default, S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
) -> Result<T, RegistryError> {
    match store.get(key) {
        Ok(Some((bytes, _))) => Ok(decode(&bytes)),
        Ok(None) => Ok(T::default()),
        Err(_) => Err(RegistryError::Store),
    }
}

/// Unconditional write (values only one writer at a time updates, or where the last one wins).
pub fn write<T: Stored, S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    value: &T,
) -> Result<(), RegistryError> {
    store
        .set(key, &codec::encode(value), 0)
        .map_err(|_| RegistryError::Store)
}

/// Compare-and-swap read-modify-write. `f` may run several times (once per try) and must depend
/// only on the value it is given; it returns whether it changed the value, and a result.
pub fn modify<T, R, S, F>(store: &mut S, key: &str, mut f: F) -> Result<R, RegistryError>
where
    T: Stored + Default,
    S: SharedStore + ?Sized,
    F: FnMut(&mut T) -> (bool, R),
{
    let mut result = None;
    modify_bytes(store, key, &mut |bytes| {
        let mut value = bytes.map_or_else(T::default, decode::<T>);
        let (changed, r) = f(&mut value);
        result = Some(r);
        if !changed {
            return Ok(None);
        }
        Ok(Some(codec::encode(&value)))
    })?;
    result.ok_or(RegistryError::Busy)
}

/// Given the stored bytes (None: absent), the bytes to write instead (None: nothing).
type Rewrite<'f> = dyn FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, RegistryError> + 'f;

/// The CAS loop of `modify` over bytes: one copy of it for every value type (the .wasm's size,
/// docs/module-size.md). `f` gets the stored bytes (None: absent) and returns the new ones, or
/// None to write nothing.
fn modify_bytes<S: SharedStore + ?Sized>(
    store: &mut S,
    key: &str,
    f: &mut Rewrite,
) -> Result<(), RegistryError> {
    for _ in 0..MAX_TRIES {
        let (stored, cas) = match store.get(key) {
            Ok(Some((bytes, cas))) => (Some(bytes), cas),
            Ok(None) => (None, CREATE_CAS),
            Err(_) => return Err(RegistryError::Store),
        };
        let Some(bytes) = f(stored.as_deref())? else {
            return Ok(());
        };
        match store.set(key, &bytes, cas) {
            Ok(()) => return Ok(()),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Other) => return Err(RegistryError::Store),
        }
    }
    Err(RegistryError::Busy)
}

/// An in-memory store with Envoy's CAS rules, for tests and benchmarks.
#[derive(Default, Debug)]
pub struct MemoryStore {
    pub map: HashMap<String, (Vec<u8>, u32)>,
    pub next_cas: u32,
    /// Fail the next N `set` calls with a CAS mismatch (simulates another worker writing).
    pub inject_mismatches: usize,
    pub writes: usize,
    pub reads: usize,
    /// Bytes handed out by `get` (the host copies every value it returns).
    pub bytes_read: usize,
}

impl SharedStore for MemoryStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.reads = self.reads.saturating_add(1);
        let v = self.map.get(key).cloned();
        if let Some((bytes, _)) = &v {
            self.bytes_read = self.bytes_read.saturating_add(bytes.len());
        }
        Ok(v)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        if self.inject_mismatches > 0 {
            self.inject_mismatches = self.inject_mismatches.saturating_sub(1);
            return Err(StoreError::CasMismatch);
        }
        match self.map.get(key) {
            Some((_, current)) if cas != 0 && cas != *current => {
                return Err(StoreError::CasMismatch)
            }
            _ => {}
        }
        self.next_cas = self.next_cas.wrapping_add(1).clamp(1, u32::MAX - 1);
        self.writes = self.writes.saturating_add(1);
        self.map
            .insert(key.to_string(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_does_not_overwrite_a_key_created_meanwhile() {
        let mut s = MemoryStore::default();
        s.set("k", b"other", 0).unwrap();
        assert_eq!(
            s.set("k", b"mine", CREATE_CAS),
            Err(StoreError::CasMismatch)
        );
        assert!(s.set("fresh", b"mine", CREATE_CAS).is_ok());
    }

    #[test]
    fn mismatches_are_retried_then_busy() {
        let mut s = MemoryStore {
            inject_mismatches: 3,
            ..Default::default()
        };
        modify(&mut s, "n", |n: &mut u64| {
            *n += 1;
            (true, ())
        })
        .unwrap();
        assert_eq!(read::<u64, _>(&mut s, "n").unwrap(), 1);
        s.inject_mismatches = 1000;
        assert_eq!(
            modify(&mut s, "n", |n: &mut u64| {
                *n += 1;
                (true, ())
            }),
            Err(RegistryError::Busy)
        );
    }
}

//! Proxy-wasm shared data as the registry's `SharedStore`.

use crate::core::registry::{SharedStore, StoreError};
use crate::filter::abi::{self, SharedGet, SharedSet};

pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match abi::get_shared_data(key) {
            SharedGet::Found(bytes, cas) => Ok(Some((bytes, cas))),
            SharedGet::Absent => Ok(None),
            SharedGet::Failed => Err(StoreError::Other),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas) {
            SharedSet::Ok => Ok(()),
            SharedSet::CasMismatch => Err(StoreError::CasMismatch),
            SharedSet::Failed => Err(StoreError::Other),
        }
    }
}

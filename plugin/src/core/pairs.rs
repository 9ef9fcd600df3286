//! The proxy-wasm ABI's serialization of header maps, decoded without any way to panic.

pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

/// Decodes the ABI's map serialization; None if it is malformed.
pub fn parse_pairs(bytes: &[u8]) -> Option<Pairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let n = u32_at(bytes, 0)?;
    let mut out = Vec::with_capacity(n.min(bytes.len() / 8));
    let mut sizes = 4usize;
    let mut data = n.checked_mul(8)?.checked_add(4)?;
    for _ in 0..n {
        let ks = u32_at(bytes, sizes)?;
        let vs = u32_at(bytes, sizes.checked_add(4)?)?;
        sizes = sizes.checked_add(8)?;
        let k_end = data.checked_add(ks)?;
        let k = bytes.get(data..k_end)?.to_vec();
        data = k_end.checked_add(1)?;
        let v_end = data.checked_add(vs)?;
        let v = bytes.get(data..v_end)?.to_vec();
        data = v_end.checked_add(1)?;
        out.push((k, v));
    }
    Some(out)
}

pub fn serialize_pairs(pairs: &[(&[u8], &[u8])]) -> Option<Vec<u8>> {
    let mut size = 4usize;
    for (k, v) in pairs {
        size = size
            .checked_add(k.len())?
            .checked_add(v.len())?
            .checked_add(10)?;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&u32::try_from(pairs.len()).ok()?.to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&u32::try_from(k.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&u32::try_from(v.len()).ok()?.to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn pairs_round_trip_and_garbage_is_refused() {
        let pairs: [(&[u8], &[u8]); 3] = [(b":status", b"200"), (b"x", b"\xff"), (b"x", b"")];
        let bytes = serialize_pairs(&pairs).unwrap();
        let back = parse_pairs(&bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[1], (b"x".to_vec(), b"\xff".to_vec()));
        assert!(parse_pairs(&bytes[..bytes.len() - 3]).is_none());
        assert!(parse_pairs(&[9, 0, 0, 0]).is_none());
        assert!(parse_pairs(&[0xff, 0xff, 0xff, 0xff, 0]).is_none());
        assert_eq!(parse_pairs(&[]).unwrap(), Vec::new());
    }
}

//! The proxy-wasm ABI's serialization of header maps, decoded without any way to panic.

pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

/// Walks the ABI's map serialization without copying; `None` at the first malformed entry.
pub struct RawPairs<'a> {
    bytes: &'a [u8],
    left: usize,
    sizes: usize,
    data: usize,
}

impl<'a> RawPairs<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        let left = if bytes.is_empty() {
            0
        } else {
            u32_at(bytes, 0).unwrap_or(usize::MAX)
        };
        RawPairs {
            bytes,
            left,
            sizes: 4,
            data: left.saturating_mul(8).saturating_add(4),
        }
    }

    fn step(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let ks = u32_at(self.bytes, self.sizes)?;
        let vs = u32_at(self.bytes, self.sizes.checked_add(4)?)?;
        let k_end = self.data.checked_add(ks)?;
        let k = self.bytes.get(self.data..k_end)?;
        let v_start = k_end.checked_add(1)?;
        let v_end = v_start.checked_add(vs)?;
        let v = self.bytes.get(v_start..v_end)?;
        self.sizes = self.sizes.checked_add(8)?;
        self.data = v_end.checked_add(1)?;
        Some((k, v))
    }
}

impl<'a> Iterator for RawPairs<'a> {
    /// `Err(())` once, for a malformed map.
    type Item = Result<(&'a [u8], &'a [u8]), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        match self.step() {
            Some(p) => {
                self.left = self.left.saturating_sub(1);
                Some(Ok(p))
            }
            None => {
                self.left = 0;
                Some(Err(()))
            }
        }
    }
}

/// The first value of `name` (case-insensitive) in a serialized map.
pub fn find_raw<'a>(bytes: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    RawPairs::new(bytes)
        .map_while(Result::ok)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// The first value of `name` in decoded pairs (names compared ASCII case-insensitively): the one
/// header finder of the core and the glue.
pub fn find_pair<'a>(pairs: &'a [(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<&'a [u8]> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Decodes the ABI's map serialization; None if it is malformed.
pub fn parse_pairs(bytes: &[u8]) -> Option<Pairs> {
    RawPairs::new(bytes)
        .map(|p| p.map(|(k, v)| (k.to_vec(), v.to_vec())).ok())
        .collect()
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
        assert_eq!(find_raw(&bytes, b"X"), Some(&b"\xff"[..]));
        assert_eq!(find_raw(&bytes, b"y"), None);
    }
}

//! The ABI's wire formats: serialized header maps and property paths ("Serialization").

use crate::types::Headers;

/// Serializes pairs as the spec says: count, (key len, value len)*, then each key and value
/// followed by a NUL.
pub fn serialize(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Parses a serialized map; `None` when the bytes do not hold one. An empty input, or a
/// single 0 byte, is the empty map.
pub fn deserialize(bytes: &[u8]) -> Option<Headers> {
    if bytes.len() <= 1 {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    // Each pair needs at least 10 bytes: refuse counts the input cannot hold before allocating.
    if count > bytes.len() / 8 {
        return None;
    }
    let mut lens = Vec::with_capacity(count);
    for i in 0..count {
        lens.push((word(4 + i * 8)?, word(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut out = Vec::with_capacity(count);
    for (kl, vl) in lens {
        let k = bytes.get(at..at + kl)?.to_vec();
        at += kl + 1;
        let v = bytes.get(at..at + vl)?.to_vec();
        at += vl + 1;
        out.push((k, v));
    }
    if at > bytes.len() {
        return None;
    }
    Some(out)
}

/// Splits a property path (segments joined by NUL bytes).
pub fn property_path(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Header names are compared case-insensitively (Envoy stores them lower-case).
pub fn name_eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The first value of `key` (names compared as HTTP does, ASCII case-insensitive).
pub(crate) fn get_value<'a>(headers: &'a Headers, key: &[u8]) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| name_eq(k, key))
        .map(|(_, v)| v.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_the_spec_example() {
        let map = vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"22".to_vec()),
        ];
        let bytes = serialize(&map);
        assert_eq!(
            bytes,
            vec![
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b',
                0, b'2', b'2', 0
            ]
        );
        assert_eq!(deserialize(&bytes).unwrap(), map);
    }

    #[test]
    fn empty_forms_and_garbage() {
        assert_eq!(deserialize(&[]).unwrap(), vec![]);
        assert_eq!(deserialize(&[0]).unwrap(), vec![]);
        assert!(deserialize(&[5, 0, 0, 0, 1]).is_none());
        assert!(deserialize(&[255, 255, 255, 255, 0, 0, 0, 0]).is_none());
    }

    #[test]
    fn duplicates_and_binary_values_survive() {
        let map = vec![
            (b"set-cookie".to_vec(), b"a=1".to_vec()),
            (b"set-cookie".to_vec(), vec![0xff, 0x00, 0x80]),
        ];
        assert_eq!(deserialize(&serialize(&map)).unwrap(), map);
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(property_path(b"request\0path"), vec!["request", "path"]);
        assert_eq!(property_path(b"plugin_root_id"), vec!["plugin_root_id"]);
    }
}

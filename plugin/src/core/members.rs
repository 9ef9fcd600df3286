//! A members list in shared data, laid out so that reading it costs nothing beyond the copy the
//! host makes: `count` (u32 LE), then the end offset of each member (u32 LE each), then the
//! members' bytes back to back. A lookup indexes straight into it.
//!
//! Measured at 5,000 members (bench/registry.md): postcard's `Vec<String>` allocated once per
//! member and made the first lookup after a change cost ~330 µs; a `\n`-joined buffer still had
//! to be scanned (~50–90 µs); with the offsets table the first lookup costs what a later one does.
//! Writers (joins and leaves, rare) rebuild the table.

use crate::core::positions::Positions;

/// A list as the store holds it; every access is bounds-checked, so garbage reads as fewer (or
/// no) members, never as a panic.
#[derive(Debug, Default, Clone)]
pub struct Members {
    bytes: Vec<u8>,
}

fn u32_at(bytes: &[u8], i: usize) -> Option<usize> {
    let b = bytes.get(i.checked_mul(4)?..i.checked_mul(4)?.checked_add(4)?)?;
    let word: [u8; 4] = b.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(word)).ok()
}

impl Members {
    pub fn parse(bytes: &[u8]) -> Members {
        Members::from_vec(bytes.to_vec())
    }

    /// Takes the buffer the store handed out, without copying it again.
    pub fn from_vec(bytes: Vec<u8>) -> Members {
        Members { bytes }
    }

    fn build(items: &[&[u8]]) -> Vec<u8> {
        let text: usize = items.iter().map(|i| i.len()).sum();
        let mut out = Vec::with_capacity(
            items
                .len()
                .saturating_mul(4)
                .saturating_add(4)
                .saturating_add(text),
        );
        out.extend_from_slice(&u32::try_from(items.len()).unwrap_or(0).to_le_bytes());
        let mut end = 0usize;
        for i in items {
            end = end.saturating_add(i.len());
            out.extend_from_slice(&u32::try_from(end).unwrap_or(u32::MAX).to_le_bytes());
        }
        for i in items {
            out.extend_from_slice(i);
        }
        out
    }

    pub fn len(&self) -> usize {
        let n = u32_at(&self.bytes, 0).unwrap_or(0);
        // A count the buffer cannot hold is garbage.
        if n.saturating_mul(4).saturating_add(4) > self.bytes.len() {
            0
        } else {
            n
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn raw(&self, i: usize) -> Option<&[u8]> {
        let n = self.len();
        if i >= n {
            return None;
        }
        // len() vouched that the offsets table fits in the buffer, so these cannot overflow.
        let base = n.checked_mul(4)?.checked_add(4)?;
        let start = if i == 0 { 0 } else { u32_at(&self.bytes, i)? };
        let end = u32_at(&self.bytes, i.checked_add(1)?)?;
        self.bytes
            .get(base.checked_add(start)?..base.checked_add(end)?)
    }

    /// Member `i`; None past the end or for a member that is not text.
    pub fn get(&self, i: usize) -> Option<&str> {
        std::str::from_utf8(self.raw(i)?).ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    fn raws(&self) -> Vec<&[u8]> {
        (0..self.len())
            .filter_map(|i| self.raw(i))
            .filter(|r| !r.is_empty())
            .collect()
    }
}

impl Members {
    /// The list with each of `items` not yet listed added; None when nothing changes.
    pub fn added(&self, items: &[&str]) -> Option<Vec<u8>> {
        let mut list = self.raws();
        let before = list.len();
        // One address (a heartbeat's join) scans; a batch (an etcd snapshot) uses a set.
        if items.len() <= 4 {
            for item in items {
                let b = item.as_bytes();
                if !b.is_empty() && !list.contains(&b) {
                    list.push(b);
                }
            }
        } else {
            let mut known = Positions::with_capacity(list.len().saturating_add(items.len()));
            for (i, l) in list.iter().enumerate() {
                known.add(known.hash(&[l]), i);
            }
            for item in items {
                let b = item.as_bytes();
                if b.is_empty() {
                    continue;
                }
                let h = known.hash(&[b]);
                if known
                    .find(h, &mut |i| list.get(i).is_some_and(|l| *l == b))
                    .is_none()
                {
                    known.add(h, list.len());
                    list.push(b);
                }
            }
        }
        (list.len() != before).then(|| Members::build(&list))
    }

    /// The list without `items`; None when nothing changes.
    pub fn removed(&self, items: &[&str]) -> Option<Vec<u8>> {
        let mut list = self.raws();
        let before = list.len();
        if items.len() <= 4 {
            list.retain(|l| !items.iter().any(|i| i.as_bytes() == *l));
        } else {
            let mut gone = Positions::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                gone.add(gone.hash(&[item.as_bytes()]), i);
            }
            list.retain(|l| {
                let h = gone.hash(&[l]);
                gone.find(h, &mut |i| items.get(i).is_some_and(|x| x.as_bytes() == *l))
                    .is_none()
            });
        }
        (list.len() != before).then(|| Members::build(&list))
    }

    pub fn contains(&self, item: &str) -> bool {
        self.iter().any(|m| m == item)
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(m: &mut Members, change: Option<Vec<u8>>) -> bool {
        match change {
            Some(b) => {
                *m = Members::from_vec(b);
                true
            }
            None => false,
        }
    }

    #[test]
    fn add_remove_and_index() {
        let mut m = Members::default();
        assert!({
            let c = m.added(&["10.0.0.1:80", "[::1]:80"]);
            apply(&mut m, c)
        });
        assert!({
            let c = m.added(&["10.0.0.1:80", "10.0.0.2:80"]);
            apply(&mut m, c)
        });
        assert_eq!(m.to_vec(), vec!["10.0.0.1:80", "[::1]:80", "10.0.0.2:80"]);
        assert!({
            let c = m.removed(&["[::1]:80", "10.0.0.9:80"]);
            apply(&mut m, c)
        });
        assert_eq!(m.to_vec(), vec!["10.0.0.1:80", "10.0.0.2:80"]);
        assert_eq!(
            (m.len(), m.get(1), m.get(2)),
            (2, Some("10.0.0.2:80"), None)
        );
        assert!({
            let c = m.removed(&["10.0.0.1:80", "10.0.0.2:80"]);
            apply(&mut m, c)
        });
        assert!(m.is_empty());
        assert!(m.removed(&["10.0.0.1:80"]).is_none(), "no change");
        assert!(m.added(&[]).is_none());
    }

    #[test]
    fn a_prefix_is_not_a_member() {
        let mut m = Members::default();
        assert!({
            let c = m.added(&["10.0.0.1:8080"]);
            apply(&mut m, c)
        });
        assert!({
            let c = m.added(&["10.0.0.1:80"]);
            apply(&mut m, c)
        });
        assert_eq!(m.len(), 2);
        assert!(m.contains("10.0.0.1:80") && !m.contains("10.0.0.1:8"));
    }

    #[test]
    fn garbage_reads_as_no_members_and_is_overwritten() {
        for bad in [
            &b"\xff\xfe"[..],
            &[9, 0, 0, 0, 1, 0, 0, 0][..],
            &[2, 0, 0, 0, 200, 0, 0, 0, 1, 0, 0, 0, b'a'][..],
        ] {
            let mut m = Members::parse(bad);
            assert!(m.iter().next().is_none(), "{bad:?}");
            assert!({
                let c = m.added(&["10.0.0.1:80"]);
                apply(&mut m, c)
            });
            assert_eq!(m.to_vec(), vec!["10.0.0.1:80"]);
        }
    }
}

//! The CIDR blocks of `registry.allowed_cidrs`: which text is a block, and whether an address is
//! inside one.
//!
//! This replaces the `ipnet` crate, which cost the .wasm about 4 KB (docs/module-size.md) for
//! these two uses. The grammar is ipnet 2.12's, rule for rule, so the same configurations are
//! accepted and refused: IPv4 octets of up to 3 digits (leading zeros allowed: `010.0.0.0/8` is
//! 10.0.0.0/8), IPv6 groups of up to 4 hex digits with an optional IPv4 tail, `::` for any number
//! of zero groups (even none), a prefix of up to 2 digits (≤ 32) or 3 digits (≤ 128). A block keeps
//! the address as written (host bits may be set); membership compares the first `prefix` bits.
//! A test compares both parsers over generated text (`tests::same_as_ipnet`).

use std::net::IpAddr;

/// One CIDR block. The address is kept in the low 32 bits for IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v6: bool,
    bits: u128,
    prefix: u8,
}

impl Cidr {
    /// The block `text` writes, None when it is not one (the whole text must be a block).
    pub fn parse(text: &str) -> Option<Cidr> {
        let mut c = Cursor {
            s: text.as_bytes(),
            pos: 0,
        };
        // ipnet tries IPv4 first and keeps it when it parses, even if text follows (then the
        // whole is refused); nothing that starts as an IPv4 block parses as an IPv6 one anyway.
        let net = match c.net(false) {
            Some(n) => n,
            None => c.net(true)?,
        };
        (c.pos == c.s.len()).then_some(net)
    }

    /// Whether `ip` is inside the block; an address of the other family never is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, bits, width) = match ip {
            IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32u32),
            IpAddr::V6(a) => (true, u128::from(a), 128u32),
        };
        if v6 != self.v6 {
            return false;
        }
        // Prefix 0: no bit to compare (a shift by the full width is 0, not an overflow).
        let host_bits = width.saturating_sub(u32::from(self.prefix));
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        (bits ^ self.bits) & mask == 0
    }
}

/// ipnet's parser over bytes: every reader either consumes what it read and returns Some, or
/// returns None and leaves the position where it was.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn atomically<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let start = self.pos;
        let r = f(self);
        if r.is_none() {
            self.pos = start;
        }
        r
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.s.get(self.pos) == Some(&byte);
        if hit {
            self.pos = self.pos.saturating_add(1);
        }
        hit
    }

    /// All the digits in a row as one number: at least one, at most `max_digits`, below `upto`.
    /// Too many digits or too large fails the whole number rather than ending it early.
    fn number(&mut self, radix: u32, max_digits: u32, upto: u32) -> Option<u32> {
        self.atomically(|c| {
            let mut value = 0u32;
            let mut digits = 0u32;
            while let Some(d) = c.s.get(c.pos).and_then(|&b| char::from(b).to_digit(radix)) {
                c.pos = c.pos.saturating_add(1);
                digits = digits.saturating_add(1);
                // Below `upto` (≤ 0x10000) before this digit: no overflow.
                value = value.saturating_mul(radix).saturating_add(d);
                if digits > max_digits || value >= upto {
                    return None;
                }
            }
            (digits > 0).then_some(value)
        })
    }

    fn ipv4(&mut self) -> Option<u32> {
        self.atomically(|c| {
            let mut bits = 0u32;
            for i in 0..4 {
                if i != 0 && !c.eat(b'.') {
                    return None;
                }
                bits = (bits << 8) | c.number(10, 3, 0x100)?;
            }
            Some(bits)
        })
    }

    /// Up to `limit` groups (`:`-separated after the first), the last two of which may be an
    /// IPv4 address: how many, their bits (the first group highest), whether IPv4 ended them.
    fn groups(&mut self, limit: u32) -> (u32, u128, bool) {
        let mut bits = 0u128;
        let mut i = 0u32;
        while i < limit {
            let first = i == 0;
            if i.saturating_add(1) < limit {
                let v4 = self.atomically(|c| if first || c.eat(b':') { c.ipv4() } else { None });
                if let Some(v4) = v4 {
                    return (i.saturating_add(2), (bits << 32) | u128::from(v4), true);
                }
            }
            let group = self.atomically(|c| {
                if first || c.eat(b':') {
                    c.number(16, 4, 0x10000)
                } else {
                    None
                }
            });
            match group {
                Some(g) => bits = (bits << 16) | u128::from(g),
                None => return (i, bits, false),
            }
            i = i.saturating_add(1);
        }
        (i, bits, false)
    }

    fn ipv6(&mut self) -> Option<u128> {
        self.atomically(|c| {
            let (head_len, head, head_v4) = c.groups(8);
            if head_len == 8 {
                return Some(head);
            }
            // An IPv4 tail is not allowed before `::`.
            if head_v4 || !c.eat(b':') || !c.eat(b':') {
                return None;
            }
            let (_, tail, _) = c.groups(8u32.saturating_sub(head_len));
            // The head's groups are the address's first ones; `::` zeroes those in between.
            let shift = 16u32.saturating_mul(8u32.saturating_sub(head_len));
            Some(head.checked_shl(shift).unwrap_or(0) | tail)
        })
    }

    fn net(&mut self, v6: bool) -> Option<Cidr> {
        self.atomically(|c| {
            let bits = if v6 { c.ipv6()? } else { u128::from(c.ipv4()?) };
            if !c.eat(b'/') {
                return None;
            }
            let prefix = if v6 {
                c.number(10, 3, 129)?
            } else {
                c.number(10, 2, 33)?
            };
            Some(Cidr {
                v6,
                bits,
                prefix: u8::try_from(prefix).ok()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_and_membership() {
        let b = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(b.contains(addr("10.255.1.2")));
        assert!(!b.contains(addr("11.0.0.1")));
        assert!(!b.contains(addr("::ffff:10.0.0.1")), "another family");
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(addr("255.255.255.255")));
        assert!(!all.contains(addr("::1")));
        let one = Cidr::parse("::1/128").unwrap();
        assert!(one.contains(addr("::1")) && !one.contains(addr("::2")));
        assert!(Cidr::parse("::/0").unwrap().contains(addr("fe80::1")));
        let host_bits = Cidr::parse("10.1.2.3/8").unwrap();
        assert!(
            host_bits.contains(addr("10.9.9.9")),
            "host bits are ignored"
        );
        assert!(Cidr::parse("fd00::/8").unwrap().contains(addr("fdab::1")));
        assert!(Cidr::parse("1:2:3:4:5:6:1.2.3.4/128")
            .unwrap()
            .contains(addr("1:2:3:4:5:6:102:304")));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/008",
            "256.0.0.0/8",
            "1.2.3/8",
            "1.2.3.4.5/8",
            "::/129",
            "1.2.3.4::/64",
            "12345::/16",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "localhost/8",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad:?}");
        }
        assert!(
            Cidr::parse("010.0.0.0/08").is_some(),
            "ipnet allows leading zeros"
        );
    }

    /// A small deterministic generator (xorshift64*): the same cases on every run.
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn ipnet_parse(text: &str) -> Option<(bool, u128, u8)> {
        match text.parse::<IpNet>().ok()? {
            IpNet::V4(n) => Some((false, u32::from(n.addr()).into(), n.prefix_len())),
            IpNet::V6(n) => Some((true, u128::from(n.addr()), n.prefix_len())),
        }
    }

    /// The parser accepts exactly what ipnet accepted, as the same block, and membership agrees,
    /// over random text from the grammar's characters and over edits of valid blocks.
    #[test]
    fn same_as_ipnet() {
        const ALPHABET: &[u8] = b"0123456789abcdefABCDEF:./x 0012::..";
        let seeds = [
            "10.0.0.0/8",
            "127.0.0.1/32",
            "::1/128",
            "::/0",
            "fd00::/8",
            "1:2:3:4:5:6:7:8/64",
            "1:2:3:4:5:6:1.2.3.4/96",
            "::ffff:10.0.0.1/120",
            "1::2:3.4.5.6/100",
            "1:2:3:4:5:6:7::/112",
            "::1:2:3:4:5:6:7:8/128",
            "0010.001.0.000/032",
        ];
        let probes: Vec<IpAddr> = [
            "10.1.2.3",
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd12::1",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:102:304",
            "::ffff:10.0.0.1",
        ]
        .iter()
        .map(|s| addr(s))
        .collect();
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for round in 0..300_000 {
            let text: String = if round % 2 == 0 {
                let len = g.below(40);
                (0..len)
                    .map(|_| char::from(ALPHABET[g.below(ALPHABET.len())]))
                    .collect()
            } else {
                let mut t = seeds[g.below(seeds.len())].as_bytes().to_vec();
                for _ in 0..=g.below(3) {
                    let at = g.below(t.len() + 1);
                    match g.below(3) {
                        0 if at < t.len() => {
                            t.remove(at);
                        }
                        1 => t.insert(at, ALPHABET[g.below(ALPHABET.len())]),
                        _ if at < t.len() => t[at] = ALPHABET[g.below(ALPHABET.len())],
                        _ => {}
                    }
                }
                String::from_utf8(t).unwrap()
            };
            let ours = Cidr::parse(&text);
            let theirs = ipnet_parse(&text);
            assert_eq!(ours.map(|c| (c.v6, c.bits, c.prefix)), theirs, "{text:?}");
            if let Some(c) = ours {
                accepted += 1;
                let net: IpNet = text.parse().unwrap();
                for p in &probes {
                    assert_eq!(c.contains(*p), net.contains(p), "{text:?} contains {p}");
                }
            }
        }
        assert!(
            accepted > 10_000,
            "too few valid blocks generated: {accepted}"
        );
    }
}

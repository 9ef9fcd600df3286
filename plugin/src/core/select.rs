//! Randomness for candidate selection: the core has none of its own, the glue passes a seed in.

/// splitmix64: turns a seed (time, context id, attempt) into a well-mixed random number.
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_seeds_spread() {
        let low_bits: std::collections::HashSet<u64> = (0..64).map(|i| mix(i) % 8).collect();
        assert_eq!(low_bits.len(), 8);
    }
}

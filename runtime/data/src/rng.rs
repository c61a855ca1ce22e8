//! `Rng`: a small deterministic PRNG (SplitMix64) for generation and augmentation.

/// SplitMix64: fast, seedable, and the same stream on every platform, so a seed names a
/// sample's augmentation exactly.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// A stream derived from `seed` and `index`, decorrelated from its neighbours (used to
    /// give every generated sample its own stream).
    pub fn derive(seed: u64, index: u64) -> Rng {
        let mut r = Rng::new(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let a = r.next_u64();
        Rng::new(a ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 24 bits, so every value is exact in f32 and below 1.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform in 0..n (0 when n is 0), by multiply-shift: no modulo bias worth noticing.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            let u = a.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(a.below(5) < 5);
            b.uniform();
            b.below(5);
        }
        assert_eq!(Rng::new(1).below(0), 0);
        assert_ne!(Rng::derive(1, 0).next_u64(), Rng::derive(1, 1).next_u64());
    }
}

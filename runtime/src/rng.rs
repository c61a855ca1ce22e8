//! A small deterministic PRNG (SplitMix64): the same seed gives the same stream on every
//! machine and every version, which run determinism and resumption rely on.

/// The data crate's SplitMix64 generator, with the runtime's stream derivation.
#[derive(Clone, Debug)]
pub struct SplitMix(pexc_data::Rng);

impl SplitMix {
    pub fn new(seed: u64) -> Self {
        SplitMix(pexc_data::Rng::new(seed))
    }

    /// A stream for one purpose at one step: independent of how many numbers other
    /// streams drew, so a resumed run draws what an uninterrupted one drew.
    pub fn derive(seed: u64, purpose: u64, step: u64) -> Self {
        let mut s = SplitMix::new(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for _ in 0..2 {
            s.next_u64();
        }
        SplitMix::new(s.next_u64() ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| SplitMix::derive(7, 1, 3).next_u64())
            .collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            SplitMix::derive(7, 1, 3).next_u64(),
            SplitMix::derive(7, 1, 4).next_u64()
        );
        let mut v: Vec<usize> = (0..10).collect();
        SplitMix::new(1).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}

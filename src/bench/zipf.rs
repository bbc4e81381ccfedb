//! YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record synthetic
//! databases"), scrambled so that the popular ranks land on keys spread over the ring.

use crate::core::hash::stable_hash;

/// YCSB's skew: the most popular item is chosen about 1/zeta(n) of the time.
pub const YCSB_THETA: f64 = 0.99;

/// Draws item indices in `0..n` with a Zipfian popularity; rank 0 is the most popular,
/// before [`ZipfianGenerator::scrambled`] spreads ranks over the keyspace.
#[derive(Clone, Debug)]
pub struct ZipfianGenerator {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl ZipfianGenerator {
    /// A generator over `n` items (at least 1) with YCSB's theta; O(n) to build (zeta sum).
    pub fn new(n: u64) -> Self {
        Self::with_theta(n, YCSB_THETA)
    }

    /// A generator with another skew `theta` in (0, 1).
    pub fn with_theta(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        ZipfianGenerator {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// The rank drawn for a uniform `u` in [0, 1): 0 is the most popular.
    pub fn rank(&self, u: f64) -> u64 {
        let uz = u * self.zetan;
        if uz < 1.0 || self.n == 1 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    /// The item drawn for `u`: its rank hashed onto `0..n`, so hot items are not neighbours
    /// (YCSB's ScrambledZipfian; two ranks may share an item, as there).
    pub fn scrambled(&self, u: f64) -> u64 {
        let rank = self.rank(u);
        stable_hash(&rank.to_le_bytes()) % self.n
    }
}

/// Sum over i in 1..=n of 1 / i^theta.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn counts(n: u64, draws: usize, scrambled: bool) -> Vec<usize> {
        let zipf = ZipfianGenerator::new(n);
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0usize; n as usize];
        for _ in 0..draws {
            let u: f64 = rng.random();
            let item = if scrambled {
                zipf.scrambled(u)
            } else {
                zipf.rank(u)
            };
            counts[item as usize] += 1;
        }
        counts
    }

    #[test]
    fn rank_zero_is_chosen_about_one_over_zeta_n_of_the_time() {
        let n = 1000;
        let draws = 100_000;
        let c = counts(n, draws, false);
        let expected = draws as f64 / zeta(n, YCSB_THETA);
        let got = c[0] as f64;
        assert!(
            (got - expected).abs() < expected * 0.1,
            "rank 0: {got} draws, expected about {expected}"
        );
        // Popularity falls with rank.
        assert!(c[0] > c[1] && c[1] > c[10] && c[10] > c[500]);
    }

    #[test]
    fn the_hottest_scrambled_key_gets_far_more_than_a_uniform_share() {
        let n = 1000;
        let draws = 100_000;
        let c = counts(n, draws, true);
        let hottest = *c.iter().max().unwrap();
        let uniform = draws / n as usize;
        assert!(
            hottest > 20 * uniform,
            "hottest {hottest} vs uniform {uniform}"
        );
        // Scrambled: the hot key is not simply item 0.
        let top = c.iter().position(|&x| x == hottest).unwrap();
        let zipf = ZipfianGenerator::new(n);
        assert_eq!(top as u64, zipf.scrambled(0.0));
    }

    #[test]
    fn a_single_item_is_always_chosen() {
        let zipf = ZipfianGenerator::new(1);
        assert_eq!(zipf.rank(0.999), 0);
        assert_eq!(zipf.scrambled(0.5), 0);
        // Zero items is taken as one.
        let none = ZipfianGenerator::new(0);
        assert_eq!((none.rank(0.999), none.scrambled(0.5)), (0, 0));
    }

    proptest! {
        #[test]
        fn items_stay_in_range(n in 1u64..5000, u in 0.0f64..1.0) {
            let zipf = ZipfianGenerator::new(n);
            prop_assert!(zipf.rank(u) < n);
            prop_assert!(zipf.scrambled(u) < n);
        }
    }
}

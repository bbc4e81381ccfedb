//! The YCSB core workloads used here and how a client picks its next operation and key.

use std::fmt;
use std::str::FromStr;

use super::stats::OpKind;
use super::zipf::ZipfianGenerator;

/// A YCSB-style operation mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// 50% reads, 50% updates (YCSB A, "update heavy").
    A,
    /// 95% reads, 5% updates (YCSB B, "read mostly").
    B,
    /// Reads only (YCSB C).
    C,
    /// Inserts of new keys only (write throughput, no load phase needed).
    W,
}

impl Workload {
    /// The fraction of operations that are reads; the rest are updates (inserts for W).
    pub fn read_fraction(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
            Workload::W => 0.0,
        }
    }

    /// Whether the measured phase reads the records of a load phase.
    pub fn needs_load(self) -> bool {
        self != Workload::W
    }

    /// The operation for a uniform `u` in [0, 1).
    pub fn op(self, u: f64) -> OpKind {
        match self {
            Workload::W => OpKind::Insert,
            _ if u < self.read_fraction() => OpKind::Read,
            _ => OpKind::Update,
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
            Workload::W => "w",
        })
    }
}

/// A name that is not a workload or distribution.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?}; expected one of {expected}")]
pub struct UnknownName {
    what: &'static str,
    got: String,
    expected: &'static str,
}

impl FromStr for Workload {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "a" => Ok(Workload::A),
            "b" => Ok(Workload::B),
            "c" => Ok(Workload::C),
            "w" => Ok(Workload::W),
            _ => Err(UnknownName {
                what: "workload",
                got: s.to_owned(),
                expected: "a, b, c, w",
            }),
        }
    }
}

/// How keys of existing records are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Every record equally likely.
    Uniform,
    /// YCSB's scrambled Zipfian (theta 0.99): a few hot records.
    Zipfian,
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
        })
    }
}

impl FromStr for Distribution {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "uniform" => Ok(Distribution::Uniform),
            "zipfian" | "zipf" => Ok(Distribution::Zipfian),
            _ => Err(UnknownName {
                what: "distribution",
                got: s.to_owned(),
                expected: "uniform, zipfian",
            }),
        }
    }
}

/// Picks record indices in `0..records`; shared by all clients (it holds no state).
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// Uniform over the records.
    Uniform(u64),
    /// Scrambled Zipfian over the records.
    Zipfian(ZipfianGenerator),
}

impl KeyChooser {
    /// A chooser over `records` records (at least 1).
    pub fn new(distribution: Distribution, records: u64) -> Self {
        let records = records.max(1);
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform(records),
            Distribution::Zipfian => KeyChooser::Zipfian(ZipfianGenerator::new(records)),
        }
    }

    /// The record for a uniform `u` in [0, 1).
    pub fn pick(&self, u: f64) -> u64 {
        match self {
            KeyChooser::Uniform(n) => ((u * *n as f64) as u64).min(n - 1),
            KeyChooser::Zipfian(zipf) => zipf.scrambled(u),
        }
    }
}

/// The key of record `index`, YCSB style.
pub fn key_name(index: u64) -> String {
    format!("user{index:010}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn mix(workload: Workload, draws: usize) -> [usize; 3] {
        let mut rng = StdRng::seed_from_u64(11);
        let mut seen = [0usize; 3];
        for _ in 0..draws {
            match workload.op(rng.random()) {
                OpKind::Read => seen[0] += 1,
                OpKind::Update => seen[1] += 1,
                OpKind::Insert => seen[2] += 1,
            }
        }
        seen
    }

    #[test]
    fn op_mixes_match_their_fractions() {
        let draws = 20_000;
        let [r, u, i] = mix(Workload::A, draws);
        assert!((r as f64 / draws as f64 - 0.5).abs() < 0.02, "A reads {r}");
        assert_eq!((r + u, i), (draws, 0));
        let [r, u, _] = mix(Workload::B, draws);
        assert!(
            (u as f64 / draws as f64 - 0.05).abs() < 0.01,
            "B updates {u}"
        );
        assert_eq!(r + u, draws);
        assert_eq!(mix(Workload::C, draws), [draws, 0, 0]);
        assert_eq!(mix(Workload::W, draws), [0, 0, draws]);
    }

    #[test]
    fn names_parse_both_ways() {
        for w in [Workload::A, Workload::B, Workload::C, Workload::W] {
            assert_eq!(w.to_string().parse::<Workload>(), Ok(w));
        }
        for d in [Distribution::Uniform, Distribution::Zipfian] {
            assert_eq!(d.to_string().parse::<Distribution>(), Ok(d));
        }
        assert_eq!("A".parse::<Workload>(), Ok(Workload::A));
        assert!("x".parse::<Workload>().is_err());
        assert!("normal".parse::<Distribution>().is_err());
        assert!(!Workload::W.needs_load() && Workload::C.needs_load());
    }

    #[test]
    fn zipfian_keys_are_skewed_and_uniform_keys_are_not() {
        let records = 1000;
        let draws = 50_000;
        let hottest = |d| {
            let chooser = KeyChooser::new(d, records);
            let mut rng = StdRng::seed_from_u64(3);
            let mut counts = vec![0usize; records as usize];
            for _ in 0..draws {
                counts[chooser.pick(rng.random()) as usize] += 1;
            }
            counts.into_iter().max().unwrap()
        };
        let uniform_share = draws / records as usize;
        assert!(hottest(Distribution::Uniform) < 3 * uniform_share);
        assert!(hottest(Distribution::Zipfian) > 20 * uniform_share);
    }

    #[test]
    fn key_names_sort_like_their_indices() {
        assert_eq!(key_name(42), "user0000000042");
        assert!(key_name(9) < key_name(10));
    }

    proptest! {
        #[test]
        fn picks_stay_among_the_records(records in 1u64..2000, u in 0.0f64..1.0) {
            for d in [Distribution::Uniform, Distribution::Zipfian] {
                prop_assert!(KeyChooser::new(d, records).pick(u) < records);
            }
        }
    }
}

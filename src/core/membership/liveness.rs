//! Liveness: how healthy a member looks from this node, and the timeouts that judge it.
//!
//! Liveness picks request targets, fallbacks and hint deliveries; it never changes who owns
//! a key range (that is the member's ring status, see [`super::RingStatus`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How healthy a member looks from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Heard from recently: a gossip target and a write target.
    Alive,
    /// Silent for longer than `suspect_after_ms`: gets no new requests; the sloppy quorum
    /// routes around it to a fallback.
    Suspect,
    /// Silent for longer than `dead_after_ms`: as Suspect, and it blocks tombstone purges. It
    /// keeps its ring place: an outage is not a departure.
    Dead,
}

impl Status {
    /// The status's name, as shown and as metric labels carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a pair of failure-detection timeouts was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TimeoutsError {
    /// A zero timeout would flag every peer on the first tick.
    #[error(
        "failure timeouts must be positive (suspect_after_ms={suspect_after_ms}, dead_after_ms={dead_after_ms})"
    )]
    Zero {
        /// The refused suspect timeout.
        suspect_after_ms: u64,
        /// The refused dead timeout.
        dead_after_ms: u64,
    },
    /// A node must be suspected before it can be declared dead.
    #[error(
        "suspect_after_ms ({suspect_after_ms}) must be less than dead_after_ms ({dead_after_ms})"
    )]
    NotOrdered {
        /// The refused suspect timeout.
        suspect_after_ms: u64,
        /// The refused dead timeout.
        dead_after_ms: u64,
    },
}

/// How long a peer may stay silent before it is suspected, then declared dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureTimeouts {
    /// Silence (ms) strictly above which an Alive peer becomes Suspect.
    pub suspect_after_ms: u64,
    /// Silence (ms) strictly above which a Suspect peer becomes Dead.
    pub dead_after_ms: u64,
}

impl Default for FailureTimeouts {
    fn default() -> Self {
        FailureTimeouts {
            suspect_after_ms: 5_000,
            dead_after_ms: 30_000,
        }
    }
}

impl FailureTimeouts {
    /// Checked timeouts: both positive and `suspect_after_ms < dead_after_ms`.
    pub fn new(suspect_after_ms: u64, dead_after_ms: u64) -> Result<Self, TimeoutsError> {
        let timeouts = FailureTimeouts {
            suspect_after_ms,
            dead_after_ms,
        };
        timeouts.validate()?;
        Ok(timeouts)
    }

    /// Checks the invariants that [`FailureTimeouts::new`] enforces (for values built by hand or
    /// deserialized from a config).
    pub fn validate(&self) -> Result<(), TimeoutsError> {
        let (suspect_after_ms, dead_after_ms) = (self.suspect_after_ms, self.dead_after_ms);
        if suspect_after_ms == 0 || dead_after_ms == 0 {
            return Err(TimeoutsError::Zero {
                suspect_after_ms,
                dead_after_ms,
            });
        }
        if suspect_after_ms >= dead_after_ms {
            return Err(TimeoutsError::NotOrdered {
                suspect_after_ms,
                dead_after_ms,
            });
        }
        Ok(())
    }
}

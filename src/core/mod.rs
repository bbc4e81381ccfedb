//! The pure core: every decision of the store that needs no I/O, no clock and no runtime.
//!
//! Time is always passed in as milliseconds (`now_ms`) so that the actors that wrap these
//! types own the clocks, and tests can drive time by hand.

pub mod anti_entropy;
#[cfg(test)]
mod crash_tests;
pub mod drain;
pub mod encoded_set;
pub mod engine;
pub mod handoff;
pub mod hash;
pub mod hints;
pub mod ids;
pub mod leave;
pub mod membership;
pub mod pieces;
pub mod purge;
pub mod purged;
pub mod quorum;
pub mod ranges;
pub mod read;
pub mod record;
pub mod replica;
pub mod ring;
pub mod segments;
#[cfg(test)]
mod sim;
pub mod store;
pub mod vclock;
pub mod version;
pub mod view;
#[cfg(test)]
mod volatile_disk;
pub mod write;

pub use ids::{ActorId, Key, NodeId};

//! What simulated nodes send each other, and what their handlers ask the world to do.
//!
//! The payloads are the core's own request and answer types, the ones the node's actors put
//! on the wire; only the envelope (an RPC id, and the client operation a write belongs to, so
//! that the checks can follow it) is the simulation's.

use bytes::Bytes;

use crate::core::anti_entropy::{AeReply, AeRequest};
use crate::core::ids::{Key, NodeId};
use crate::core::membership::MemberDigest;
use crate::core::replica::{ReplicaReply, ReplicaRequest};
use crate::core::vclock::{Dot, VClock};
use crate::core::version::VersionSet;

/// A message body.
#[derive(Clone, Debug)]
pub enum Payload {
    /// A batch for the Storage side (one request per message here).
    Replica(Vec<ReplicaRequest>),
    /// Its answer.
    ReplicaAnswer(Vec<ReplicaReply>),
    /// A gossip digest; the answer is the receiver's.
    Gossip(Vec<MemberDigest>),
    /// The receiver's digest.
    GossipAnswer(Vec<MemberDigest>),
    /// An anti-entropy or purge step.
    Ae(AeRequest),
    /// Its answer, or why it was refused.
    AeAnswer(Result<AeReply, String>),
    /// A write handed to a coordinator.
    Forward(ClientWrite),
    /// The coordinator's answer.
    ForwardAnswer(Result<VClock, String>),
}

/// A message in flight.
#[derive(Clone, Debug)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// The RPC it belongs to.
    pub rpc: u64,
    /// True for an answer.
    pub answer: bool,
    /// The body.
    pub payload: Payload,
}

/// A client's write, with the id the checks follow it by.
#[derive(Clone, Debug)]
pub struct ClientWrite {
    /// The client operation.
    pub op: u64,
    /// The key.
    pub key: Key,
    /// The value, or `None` for a delete.
    pub value: Option<Bytes>,
    /// What the client had read.
    pub context: VClock,
    /// Acks wanted.
    pub w: usize,
}

/// A client's operation, as it reaches the node it picked.
#[derive(Clone, Debug)]
pub enum ClientOp {
    /// A read.
    Get {
        /// The operation.
        op: u64,
        /// The key.
        key: Key,
        /// Replies wanted.
        r: usize,
    },
    /// A write or a delete.
    Write(ClientWrite),
}

/// What a client operation ended with.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// A read's merged set.
    Read(VersionSet),
    /// A write's answer context.
    Written(VClock),
    /// Not served (refused, too few replies or acks, timed out).
    Failed(String),
}

/// Timers a node sets itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// A gossip round.
    Gossip,
    /// Hint drain and handoff.
    Replicate,
    /// An anti-entropy round and a purge pass.
    AntiEntropy,
    /// An RPC's answer is overdue.
    Rpc(u64),
}

/// What a node's handler asks the world to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Send a message.
    Send(Message),
    /// Wake this node after `after` ms.
    Timer {
        /// Delay.
        after: u64,
        /// Which timer.
        timer: Timer,
    },
    /// Answer a client operation.
    Answer {
        /// The operation.
        op: u64,
        /// Its outcome.
        outcome: Outcome,
    },
    /// A write was coordinated: it made this dot.
    Coordinated {
        /// The client operation.
        op: u64,
        /// The dot made.
        dot: Dot,
    },
    /// This node answers write `op` as acknowledged, having counted `required` acks.
    Acked {
        /// The client operation.
        op: u64,
        /// The acks the write waited for (W, capped by the ring's members).
        required: usize,
    },
    /// This node purged `key`, whose set had this context.
    Purged {
        /// The key.
        key: Key,
        /// The purged set's context (contexts and dots).
        context: VClock,
    },
    /// The node stops for good (it was removed, or it left).
    Stop(String),
    /// The node made a change that no sync covers yet (a handoff's drop, a hint forgotten),
    /// or answered a purge check: a crash now is the one that tells whether what it changed
    /// or answered holds.
    Unsynced,
}

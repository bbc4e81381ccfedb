//! How large a key's sibling set may grow by a coordinated write.
//!
//! Only a coordinated write is checked, before its dot is made; sets merged from peers are
//! taken as they come. The versions counted are those the write's (pruned) context does not
//! replace, plus the new one: what survives the write.

use bytes::Bytes;

use super::{Store, StoreError};
use crate::core::vclock::{PRUNE_LIMIT, VClock};
use crate::core::version::VersionSet;

/// How large a key's sibling set may grow by a coordinated write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetLimits {
    /// Most value bytes, siblings included.
    pub max_bytes: usize,
    /// Most versions, tombstones and empty values included.
    pub max_versions: usize,
}

impl SetLimits {
    /// No limit: for stores that only take what others coordinated.
    pub const NONE: SetLimits = SetLimits {
        max_bytes: usize::MAX,
        max_versions: usize::MAX,
    };
}

impl Store {
    /// Refuses a write that would take the key past the set limits. The versions that survive
    /// it are those whose dots the (pruned) context does not cover, plus the new one.
    pub(super) fn check_limits(
        &self,
        set: &VersionSet,
        context: &VClock,
        value: Option<&Bytes>,
    ) -> Result<(), StoreError> {
        let limits = self.limits;
        if limits == SetLimits::NONE {
            return Ok(());
        }
        let pruned = context.pruned(PRUNE_LIMIT);
        let survivors = set.versions().iter().filter(|v| !pruned.contains(&v.dot));
        let (count, bytes) = survivors.fold((1, value.map_or(0, Bytes::len)), |(n, b), v| {
            (n + 1, b + v.value.as_ref().map_or(0, Bytes::len))
        });
        if bytes > limits.max_bytes {
            return Err(StoreError::SetTooLarge {
                size: bytes,
                max: limits.max_bytes,
            });
        }
        if count > limits.max_versions {
            return Err(StoreError::TooManyVersions {
                versions: count,
                max: limits.max_versions,
            });
        }
        Ok(())
    }
}

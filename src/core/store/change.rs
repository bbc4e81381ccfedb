//! How a change of one key runs: under its segment's lock, through the engine, with every
//! index kept in step.
//!
//! Each change reads the key's set, changes it and stores it while holding the key's segment
//! of the engine, and moves in the same step the digests, the purge candidates and the
//! gauges, so that none of them can disagree with the data. Lock order is always the key's
//! segment first, then the candidates' mutex or the purge memory's; readers of those take
//! their mutex alone. Changes are counted while they run: a closed store refuses new ones
//! and waits for those under way, so that its clean-stop record describes the data exactly.
//! A failed read is remembered ([`Store::failure`]) and answered as nothing found.

use super::{ChangeGuard, Store, StoreError, lock};
use crate::core::encoded_set::EncodedSet;
use crate::core::engine::{EngineError, Segment};
use crate::core::ids::Key;
use crate::core::version::VersionSet;
use std::sync::atomic::Ordering;

impl Store {
    // Counts a change under way; refused once the store is closed or sealed.
    pub(super) fn begin_change(&self) -> Result<ChangeGuard<'_>, StoreError> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = ChangeGuard(&self.in_flight);
        if self.closed.load(Ordering::SeqCst) {
            return Err(EngineError::Failed("the store is closed".into()).into());
        }
        if self.sealed.load(Ordering::SeqCst) {
            return Err(StoreError::Sealed);
        }
        Ok(guard)
    }

    pub(super) fn note_failure(&self, error: EngineError) {
        lock(&self.failure).get_or_insert(error);
    }

    // Runs a read on `key`'s segment; a failure is remembered and answered as `None`.
    pub(super) fn read<T>(
        &self,
        key: &[u8],
        read: impl Fn(&dyn Segment) -> Result<T, EngineError>,
    ) -> Option<T> {
        let mut result = None;
        self.engine
            .locked(crate::core::segments::segment_of(key), &mut |segment| {
                result = Some(read(segment));
            });
        match result? {
            Ok(found) => Some(found),
            Err(e) => {
                self.note_failure(e);
                None
            }
        }
    }

    // Runs `change` on the key's set under its segment's lock and stores the result, keeping
    // the digests, the candidates and the gauges in step. A non-empty set never becomes empty
    // (merges and writes only add or replace), so a key gets its record here and loses it
    // only by a purge or a handoff; a failed write on an absent key leaves nothing behind.
    // Nothing is changed unless the engine took the new set.
    pub(super) fn update<T>(
        &self,
        key: &Key,
        change: impl FnOnce(&mut VersionSet) -> Result<T, StoreError>,
    ) -> Result<(T, u64), StoreError> {
        self.update_encoded(key, |set| change(set).map(|t| (t, None)))
    }

    // As `update`, for a change that may know the encoding of the set it leaves (`Some`
    // only when it is exactly that set's), which is then stored instead of encoding the set
    // again.
    pub(super) fn update_encoded<T>(
        &self,
        key: &Key,
        change: impl FnOnce(&mut VersionSet) -> Result<(T, Option<EncodedSet>), StoreError>,
    ) -> Result<(T, u64), StoreError> {
        let _change = self.begin_change()?;
        let mut change = Some(change);
        let mut outcome = None;
        self.engine
            .locked(crate::core::segments::segment_of(key), &mut |segment| {
                if let Some(change) = change.take() {
                    outcome = Some(self.update_locked(segment, key, change));
                }
            });
        outcome.unwrap_or_else(|| {
            Err(EngineError::Failed("the key's segment does not exist".into()).into())
        })
    }

    pub(super) fn update_locked<T>(
        &self,
        segment: &mut dyn Segment,
        key: &Key,
        change: impl FnOnce(&mut VersionSet) -> Result<(T, Option<EncodedSet>), StoreError>,
    ) -> Result<(T, u64), StoreError> {
        let stored = segment.get(key)?;
        let old_digest = stored.as_ref().map_or(0, |(d, _)| *d);
        let mut set = stored.map(|(_, set)| set).unwrap_or_default();
        let was_empty = set.is_empty();
        let was_tombstones = set.is_all_tombstones();
        let old_values = set.value_bytes();
        let (result, encoded) = change(&mut set)?;
        let digest = set.digest();
        if digest == old_digest {
            return Ok((result, digest));
        }
        if set.is_empty() {
            segment.remove(key)?;
        } else {
            let encoded = encoded.unwrap_or_else(|| EncodedSet::encode(&set));
            segment.put(key, digest, &set, &encoded)?;
        }
        self.xor_segment(key, old_digest, digest);
        let tombstones = set.is_all_tombstones();
        if tombstones != was_tombstones {
            let mut candidates = lock(&self.tombstones);
            if tombstones {
                candidates.insert(key.clone());
            } else {
                candidates.remove(key);
            }
        }
        self.count(key, was_empty, old_values, &set);
        Ok((result, digest))
    }

    // Removes `key` when `decide` (given its set and digest) says so, under its segment's
    // lock, keeping the indexes in step. The candidates change under that lock too, so a
    // concurrent first write of the key cannot be listed before this removal and then lost
    // by it.
    pub(super) fn remove_if(
        &self,
        key: &Key,
        decide: impl FnOnce(&VersionSet, u64) -> Result<bool, EngineError>,
    ) -> bool {
        let Ok(_change) = self.begin_change() else {
            return false;
        };
        let mut decide = Some(decide);
        let mut removed = Ok(false);
        self.engine
            .locked(crate::core::segments::segment_of(key), &mut |segment| {
                let Some(decide) = decide.take() else { return };
                removed = (|| {
                    let Some((digest, set)) = segment.get(key)? else {
                        return Ok(false);
                    };
                    if !decide(&set, digest)? {
                        return Ok(false);
                    }
                    segment.remove(key)?;
                    if set.is_all_tombstones() {
                        lock(&self.tombstones).remove(key);
                    }
                    self.xor_segment(key, digest, 0);
                    self.count(key, false, set.value_bytes(), &VersionSet::new());
                    Ok(true)
                })();
            });
        match removed {
            Ok(removed) => removed,
            // A full disk refuses removals as it refuses writes: the handoff or purge tries
            // again later, and the node keeps serving (draining is what frees a full node).
            Err(EngineError::DiskFull(_)) => false,
            Err(e) => {
                self.note_failure(e);
                false
            }
        }
    }
}

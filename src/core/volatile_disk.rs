//! A simulated disk for tests: what is written becomes durable only at a sync, and a crash
//! keeps the synced image. The store's data, its metadata and a hint journal live on it, as
//! they share one journal in the durable engine, so that one sync covers all three.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::encoded_set::EncodedSet;
use super::engine::{Engine, EngineError, Segment, Summary};
use super::hints::{Hint, HintId, HintJournal};
use super::ids::Key;
use super::version::VersionSet;

/// What the disk holds: written, or as of the last sync.
#[derive(Clone, Default)]
pub struct Image {
    data: BTreeMap<Vec<u8>, (u64, VersionSet)>,
    meta: BTreeMap<String, Bytes>,
    hints: BTreeMap<HintId, Hint>,
}

impl Image {
    /// The hints the image holds, oldest id first: what a node reopening it loads.
    pub fn hints(&self) -> impl Iterator<Item = &Hint> {
        self.hints.values()
    }
}

/// A disk whose writes become durable only at a sync; a crash keeps the synced image.
#[derive(Default)]
pub struct VolatileDisk {
    state: Mutex<(Image, Image)>, // (written, synced)
    crashed: AtomicBool,
    // One lock for every segment: a read-merge-write holds it; the state's lock is held
    // only per step, so that a lease written mid-write can take it.
    segments: Mutex<()>,
}

impl VolatileDisk {
    /// A disk holding `image`, all of it synced.
    pub fn from_image(image: Image) -> Self {
        VolatileDisk {
            state: Mutex::new((image.clone(), image)),
            crashed: AtomicBool::new(false),
            segments: Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, (Image, Image)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Crashes: every later write fails, and what survives is the synced image.
    pub fn crash(&self) -> Image {
        let state = self.lock();
        self.crashed.store(true, Ordering::SeqCst);
        state.1.clone()
    }

    fn check(&self) -> Result<(), EngineError> {
        if self.crashed.load(Ordering::SeqCst) {
            return Err(EngineError::Failed("crashed".into()));
        }
        Ok(())
    }
}

struct VolatileSegment<'a> {
    disk: &'a VolatileDisk,
    segment: usize,
    _locked: MutexGuard<'a, ()>,
}

impl Segment for VolatileSegment<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<(u64, VersionSet)>, EngineError> {
        Ok(self.disk.lock().0.data.get(key).cloned())
    }

    fn digest(&self, key: &[u8]) -> Result<u64, EngineError> {
        Ok(self.disk.lock().0.data.get(key).map_or(0, |(d, _)| *d))
    }

    fn put(
        &mut self,
        key: &[u8],
        digest: u64,
        set: &VersionSet,
        _encoded: &EncodedSet,
    ) -> Result<(), EngineError> {
        let mut state = self.disk.lock();
        self.disk.check()?;
        state.0.data.insert(key.to_vec(), (digest, set.clone()));
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), EngineError> {
        let mut state = self.disk.lock();
        self.disk.check()?;
        state.0.data.remove(key);
        Ok(())
    }

    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], u64)) -> Result<(), EngineError> {
        let state = self.disk.lock();
        for (key, (digest, _)) in &state.0.data {
            if crate::core::segments::segment_of(key) == self.segment {
                f(key, *digest);
            }
        }
        Ok(())
    }
}

impl Engine for Arc<VolatileDisk> {
    fn locked(&self, segment: usize, f: &mut dyn FnMut(&mut dyn Segment)) {
        let segments = self.segments.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut VolatileSegment {
            disk: self,
            segment,
            _locked: segments,
        });
    }

    fn keys_in_segment(&self, segment: usize) -> Result<Vec<(Key, u64)>, EngineError> {
        let state = self.lock();
        Ok(state
            .0
            .data
            .iter()
            .filter(|(k, _)| crate::core::segments::segment_of(k) == segment)
            .map(|(k, (d, _))| (Bytes::copy_from_slice(k), *d))
            .collect())
    }

    fn scan(&self, f: &mut dyn FnMut(&[u8], Summary)) -> Result<(), EngineError> {
        for (key, (digest, set)) in &self.lock().0.data {
            f(key, Summary::of(*digest, set));
        }
        Ok(())
    }

    fn meta(&self, name: &str) -> Result<Option<Bytes>, EngineError> {
        Ok(self.lock().0.meta.get(name).cloned())
    }

    fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), EngineError> {
        let mut state = self.lock();
        self.check()?;
        state
            .0
            .meta
            .insert(name.into(), Bytes::copy_from_slice(value));
        // Like the status file beside a journal: the entry is durable at once (and what was
        // written before it, which the durable engine syncs first).
        state.1 = state.0.clone();
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        let mut state = self.lock();
        self.check()?;
        // The journal's fsync: data and hints; metadata is durable only through `set_meta`.
        state.1.data = state.0.data.clone();
        state.1.hints = state.0.hints.clone();
        Ok(())
    }

    fn durable(&self) -> bool {
        true
    }
}

/// The hints journal on a [`VolatileDisk`]: durable at the store's next sync, like the
/// durable engine's hints keyspace, which shares the data's journal.
pub struct VolatileHints(pub Arc<VolatileDisk>);

impl HintJournal for VolatileHints {
    fn record(&self, hint: &Hint) -> Result<(), String> {
        let mut state = self.0.lock();
        self.0.check().map_err(|e| e.to_string())?;
        state.0.hints.insert(hint.id, hint.clone());
        Ok(())
    }

    fn forget(&self, id: HintId) -> bool {
        let mut state = self.0.lock();
        if self.0.check().is_err() {
            return false;
        }
        state.0.hints.remove(&id);
        true
    }
}

//! The store's durability rules on a simulated disk that loses, at a crash, everything
//! written since the last sync: nothing acknowledged after a sync is lost, and a reopened
//! store never makes a dot it made before the crash, acknowledged or not (its replicas may
//! hold it).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::encoded_set::EncodedSet;
use super::engine::{Engine, EngineError, Segment, Summary};
use super::ids::{ActorId, Key};
use super::store::{SetLimits, Store};
use super::vclock::{Dot, VClock};
use super::version::VersionSet;

#[derive(Clone, Default)]
struct Image {
    data: BTreeMap<Vec<u8>, (u64, VersionSet)>,
    meta: BTreeMap<String, Bytes>,
}

/// A disk whose writes become durable only at a sync; a crash keeps the synced image.
#[derive(Default)]
struct VolatileDisk {
    state: Mutex<(Image, Image)>, // (written, synced)
    crashed: AtomicBool,
    // One lock for every segment: a read-merge-write holds it; the state's lock is held
    // only per step, so that a lease written mid-write can take it.
    segments: Mutex<()>,
}

impl VolatileDisk {
    fn from_image(image: Image) -> Self {
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
    fn crash(&self) -> Image {
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
        // Like the status file beside a journal: the entry is durable at once (and the data
        // written before it, which the durable engine syncs first).
        state.1 = state.0.clone();
        Ok(())
    }

    fn sync(&self) -> Result<(), EngineError> {
        let mut state = self.lock();
        self.check()?;
        // The journal's fsync: data only; metadata is durable only through `set_meta`.
        state.1.data = state.0.data.clone();
        Ok(())
    }

    fn durable(&self) -> bool {
        true
    }
}

fn open(disk: &Arc<VolatileDisk>) -> Store {
    let actor = ActorId::new("a", 1 << 20);
    Store::open(Box::new(Arc::clone(disk)), actor, SetLimits::NONE).expect("opens")
}

#[test]
fn a_crash_loses_nothing_acknowledged_after_a_sync_and_no_dot_is_ever_made_twice() {
    let peer = Arc::new(Store::new(ActorId::new("peer", 1)));
    let mut disk = Arc::new(VolatileDisk::default());
    let mut acked: Vec<(Key, Dot)> = Vec::new();
    let mut issued: HashSet<Dot> = HashSet::new();
    for round in 0..6u64 {
        let store = Arc::new(open(&disk));
        // Every dot made before this life must stay unmade by it.
        let floor = issued.iter().map(|d| d.counter).max().unwrap_or(0);
        let writes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (store, peer, writes) =
                    (Arc::clone(&store), Arc::clone(&peer), Arc::clone(&writes));
                std::thread::spawn(move || {
                    let (mut acked, mut issued) = (Vec::new(), Vec::new());
                    for i in 0.. {
                        let key = Bytes::from(format!("r{round}-t{t}-{i}"));
                        // Coordinated here, or merged from a peer, as replica writes are.
                        let dot = if i % 3 == 2 {
                            let value = Some(Bytes::from("p"));
                            let set = peer.coordinate(&key, &VClock::new(), value, 0).unwrap();
                            if store.merge(&key, &set.set()).is_err() {
                                break;
                            }
                            set.dot
                        } else {
                            match store.coordinate(&key, &VClock::new(), Some(key.clone()), 0) {
                                Ok(written) => {
                                    issued.push(written.dot.clone());
                                    written.dot
                                }
                                Err(_) => break,
                            }
                        };
                        writes.fetch_add(1, Ordering::SeqCst);
                        // Acknowledged only once a sync covered it.
                        if store.engine().sync().is_err() {
                            break;
                        }
                        acked.push((key, dot));
                    }
                    (acked, issued)
                })
            })
            .collect();
        let target = 200 + round * 150;
        while writes.load(Ordering::SeqCst) < target {
            std::thread::yield_now();
        }
        let image = disk.crash();
        for thread in threads {
            let (a, i) = thread.join().unwrap();
            acked.extend(a);
            issued.extend(i);
        }
        disk = Arc::new(VolatileDisk::from_image(image));
        let reopened = open(&disk);
        let lost: Vec<_> = acked
            .iter()
            .filter(|(key, dot)| !reopened.get(key).context().contains(dot))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost: {lost:?}"
        );
        let next = reopened
            .coordinate(&Bytes::from("probe"), &VClock::new(), None, 0)
            .unwrap();
        assert!(
            !issued.contains(&next.dot) && next.dot.counter > floor,
            "round {round}: dot {:?} made again",
            next.dot
        );
        issued.insert(next.dot);
    }
    assert!(
        acked.len() > 1000,
        "only {} writes acknowledged",
        acked.len()
    );
}

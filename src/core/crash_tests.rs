//! The store's durability rules on a simulated disk that loses, at a crash, everything
//! written since the last sync: nothing acknowledged after a sync is lost, and a reopened
//! store never makes a dot it made before the crash, acknowledged or not (its replicas may
//! hold it).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::ids::{ActorId, Key};
use super::store::{SetLimits, Store};
use super::vclock::{Dot, VClock};
use super::volatile_disk::VolatileDisk;

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

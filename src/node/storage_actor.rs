//! The Storage actor: the replica side of reads and writes, reachable from every peer.
//!
//! The data lives in the shared [`crate::core::store::Store`], not in the actor, so a
//! restarted Storage actor serves everything that was stored before it crashed. What a
//! request does is decided in [`crate::core::replica`].

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, pg};

use super::peers::Role;
use super::replicas::STORAGE_REPLY_BYTES;
use super::shared::NodeShared;
use super::wire::{Payload, ReplicaReply, StorageMsg};

/// Serves replica reads and writes.
#[derive(Clone)]
pub struct StorageActor;

impl Actor for StorageActor {
    type Msg = StorageMsg;
    type State = Arc<NodeShared>;
    type Arguments = Arc<NodeShared>;

    async fn pre_start(
        &self,
        myself: ActorRef<StorageMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<Self::State, ActorProcessingErr> {
        pg::join(Role::Storage.group().to_string(), vec![myself.get_cell()]);
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<StorageMsg>,
        msg: StorageMsg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StorageMsg::Ping(payload, reply) => {
                // The caller may have given up already; nothing to do then.
                let _ = reply.send(payload);
            }
            StorageMsg::Batch(batch, reply) => {
                let answer = batch.decode().map(|requests| {
                    let local = shared.local();
                    let replies = local.serve(requests, STORAGE_REPLY_BYTES);
                    // A member refuses only the hints its full hint store cannot take.
                    if local.member {
                        let refused = replies
                            .iter()
                            .filter(|r| matches!(r, ReplicaReply::Refused(_)))
                            .count();
                        shared.metrics.hints_refused.inc_by(refused as u64);
                    }
                    replies
                });
                let stored = |replies: &Vec<ReplicaReply>| {
                    replies.iter().any(|r| matches!(r, ReplicaReply::Stored))
                };
                if !answer.as_ref().is_ok_and(stored) {
                    let _ = reply.send(Payload(answer));
                    return Ok(());
                }
                // On disk, answered once an fsync (`--fsync always`, by the fsync thread) or a
                // hand-over to the OS (`never`, by the node's hand-over task) that started
                // after the batch was applied has finished; the actor goes on with the next
                // batch meanwhile, which shares that round or the following one.
                shared.after_sync(move |synced| {
                    let answer = answer.map(|replies| match synced {
                        Ok(()) => replies,
                        Err(e) => unsynced(replies, &e.to_string()),
                    });
                    let _ = reply.send(Payload(answer));
                });
            }
        }
        Ok(())
    }
}

/// The replies of a batch whose fsync failed: its writes are no acks.
fn unsynced(replies: Vec<ReplicaReply>, why: &str) -> Vec<ReplicaReply> {
    replies
        .into_iter()
        .map(|r| match r {
            ReplicaReply::Stored => ReplicaReply::Refused(format!("not made durable: {why}")),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::NodeConfig;
    use crate::core::encoded_set::EncodedSet;
    use crate::core::ids::Key;
    use crate::core::replica::{ReplicaPut, ReplicaRequest};
    use crate::core::vclock::VClock;
    use crate::core::version::VersionSet;

    fn node(name: &str) -> Arc<NodeShared> {
        let config = NodeConfig::new(name, "127.0.0.1:1".parse().unwrap());
        NodeShared::new(config, 1).unwrap()
    }

    fn written(shared: &NodeShared, key: &'static [u8], value: &[u8]) -> EncodedSet {
        let key = Key::from_static(key);
        let value = Some(Bytes::copy_from_slice(value));
        let coordinated = shared
            .store
            .coordinate(&key, &VClock::new(), value, 1)
            .unwrap();
        coordinated.versions
    }

    #[test]
    fn a_batch_is_served_in_order_until_the_answer_would_outgrow_its_budget() {
        let shared = node("n1");
        let big = written(&shared, b"big", &[1u8; 1000]);
        let small = written(&shared, b"small", b"x");
        // Each write from a coordinator of its own: siblings, so each applied one shows.
        let put = |value: &[u8]| {
            let source = node(&format!("c{}", value[1]));
            ReplicaPut {
                key: Key::from_static(b"new"),
                versions: written(&source, b"new", value),
                hint_for: None,
            }
        };
        let batch = |put: ReplicaPut| {
            vec![
                ReplicaRequest::Get(Key::from_static(b"small")),
                ReplicaRequest::Put(put),
                ReplicaRequest::Get(Key::from_static(b"big")),
                ReplicaRequest::Get(Key::from_static(b"absent")),
            ]
        };
        let all = shared.local().serve(batch(put(b"v1")), usize::MAX);
        assert_eq!(
            all,
            vec![
                ReplicaReply::Got(small.clone()),
                ReplicaReply::Stored,
                ReplicaReply::Got(big.clone()),
                ReplicaReply::Got(EncodedSet::encode(&VersionSet::new())),
            ]
        );
        assert_eq!(shared.store.get(b"new").len(), 1);

        // Room for the small read and the ack, not for the big read: the rest is left out.
        let budget = small.size_bound() + 2 + 10;
        assert!(budget < big.size_bound());
        let prefix = shared.local().serve(batch(put(b"v2")), budget);
        assert_eq!(
            prefix,
            vec![ReplicaReply::Got(small.clone()), ReplicaReply::Stored]
        );
        assert_eq!(
            shared.store.get(b"new").len(),
            2,
            "the answered write was applied"
        );

        // The first request is always served, however large its answer.
        let first = shared
            .local()
            .serve(vec![ReplicaRequest::Get(Key::from_static(b"big"))], 1);
        assert_eq!(first, vec![ReplicaReply::Got(big)]);

        // A write after a read that was left out is left out too, unapplied.
        let reads_first = vec![
            ReplicaRequest::Get(Key::from_static(b"small")),
            ReplicaRequest::Get(Key::from_static(b"big")),
            ReplicaRequest::Put(put(b"v3")),
        ];
        assert_eq!(shared.local().serve(reads_first, budget).len(), 1);
        assert_eq!(shared.store.get(b"new").len(), 2);
    }
}

#[cfg(test)]
mod ack_tests {
    //! A replica acks a batch of writes only after an fsync that covers them, while batches
    //! keep coming, on an engine whose fsync is slow.

    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use ractor::Actor;
    use ractor::rpc::CallResult;

    use super::*;
    use crate::config::{Fsync, NodeConfig};
    use crate::core::encoded_set::EncodedSet;
    use crate::core::engine::{Engine, EngineError, MemoryEngine, Segment, Summary};
    use crate::core::hints::HintStore;
    use crate::core::ids::{ActorId, Key};
    use crate::core::replica::{ReplicaPut, ReplicaRequest};
    use crate::core::store::{SetLimits, Store};
    use crate::core::vclock::VClock;
    use crate::core::version::VersionSet;
    use crate::node::wire::Encoded;

    /// Keys in the order they were written, and how many of them are durable: those written
    /// before the start of a sync that has ended.
    #[derive(Clone, Default)]
    struct Log {
        written: Arc<Mutex<Vec<Vec<u8>>>>,
        durable: Arc<AtomicUsize>,
    }

    impl Log {
        fn is_durable(&self, key: &[u8]) -> bool {
            let written = self.written.lock().unwrap();
            let at = written.iter().position(|k| k == key);
            at.is_some_and(|at| at < self.durable.load(Ordering::SeqCst))
        }
    }

    /// Memory that keeps a [`Log`] and takes 30 ms per sync, and whose syncs wait while
    /// its [`Gate`] is shut.
    struct SlowDisk {
        memory: MemoryEngine,
        log: Log,
        gate: Gate,
    }

    /// Holds syncs back while shut.
    #[derive(Clone, Default)]
    struct Gate(Arc<(Mutex<bool>, std::sync::Condvar)>);

    struct Shut(Gate);

    impl Drop for Shut {
        fn drop(&mut self) {
            self.0.set_shut(false);
        }
    }

    impl Gate {
        /// Shuts the gate until the guard is dropped (also when a test fails: a sync held
        /// forever would keep the node, and the test, from ending).
        fn shut(&self) -> Shut {
            self.set_shut(true);
            Shut(self.clone())
        }

        fn set_shut(&self, shut: bool) {
            *self.0.0.lock().unwrap_or_else(|p| p.into_inner()) = shut;
            self.0.1.notify_all();
        }

        fn pass(&self) {
            let shut = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
            drop(self.0.1.wait_while(shut, |shut| *shut));
        }
    }

    struct Logged<'a> {
        inner: &'a mut dyn Segment,
        log: &'a Log,
    }

    impl Segment for Logged<'_> {
        fn get(&self, key: &[u8]) -> Result<Option<(u64, VersionSet)>, EngineError> {
            self.inner.get(key)
        }
        fn digest(&self, key: &[u8]) -> Result<u64, EngineError> {
            self.inner.digest(key)
        }
        fn put(
            &mut self,
            key: &[u8],
            digest: u64,
            set: &VersionSet,
            encoded: &EncodedSet,
        ) -> Result<(), EngineError> {
            self.inner.put(key, digest, set, encoded)?;
            self.log.written.lock().unwrap().push(key.to_vec());
            Ok(())
        }
        fn remove(&mut self, key: &[u8]) -> Result<(), EngineError> {
            self.inner.remove(key)
        }
        fn for_each_key(&self, f: &mut dyn FnMut(&[u8], u64)) -> Result<(), EngineError> {
            self.inner.for_each_key(f)
        }
    }

    impl Engine for SlowDisk {
        fn locked(&self, segment: usize, f: &mut dyn FnMut(&mut dyn Segment)) {
            let log = &self.log;
            self.memory
                .locked(segment, &mut |inner| f(&mut Logged { inner, log }));
        }
        fn keys_in_segment(&self, segment: usize) -> Result<Vec<(Key, u64)>, EngineError> {
            self.memory.keys_in_segment(segment)
        }
        fn scan(&self, f: &mut dyn FnMut(&[u8], Summary)) -> Result<(), EngineError> {
            self.memory.scan(f)
        }
        fn meta(&self, name: &str) -> Result<Option<Bytes>, EngineError> {
            self.memory.meta(name)
        }
        fn set_meta(&self, name: &str, value: &[u8]) -> Result<(), EngineError> {
            self.memory.set_meta(name, value)
        }
        fn sync(&self) -> Result<(), EngineError> {
            let upto = self.log.written.lock().unwrap().len();
            self.gate.pass();
            std::thread::sleep(Duration::from_millis(30));
            self.log.durable.fetch_max(upto, Ordering::SeqCst);
            Ok(())
        }
        fn durable(&self) -> bool {
            true
        }
    }

    fn put(source: &NodeShared, key: &str) -> ReplicaRequest {
        let key = Key::copy_from_slice(key.as_bytes());
        let value = Some(Bytes::from_static(b"v"));
        let coordinated = source.store.coordinate(&key, &VClock::new(), value, 1);
        ReplicaRequest::Put(ReplicaPut {
            key,
            versions: coordinated.unwrap().versions,
            hint_for: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_batch_of_writes_is_acked_only_once_an_fsync_covers_it() {
        batches_are_acked_only_once_a_sync_covers_them(Fsync::Always).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_fsyncs_each_batch_is_acked_only_once_handed_over() {
        // Under `never` the engine's sync is the hand-over to the OS, made by the hand-over task.
        batches_are_acked_only_once_a_sync_covers_them(Fsync::Never).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_sync_covers_the_changes_made_before_it_under_either_policy() {
        // A purge's answer counts a tombstone as held only after this: under `never` too, a
        // tombstone still in the engine's buffer would be gone after a process kill.
        for fsync in [Fsync::Always, Fsync::Never] {
            let (shared, log, _gate) = slow_node(fsync);
            let key = Key::from_static(b"gone");
            let deleted = shared.store.coordinate(&key, &VClock::new(), None, 1);
            assert!(deleted.is_ok(), "{fsync:?}");
            assert!(!log.is_durable(b"gone"), "{fsync:?}: no sync yet");
            shared.sync_store().await.unwrap();
            assert!(log.is_durable(b"gone"), "{fsync:?}");
        }
    }

    /// A node named "r" on a [`SlowDisk`], with its log and its syncs' gate.
    fn slow_node(fsync: Fsync) -> (Arc<NodeShared>, Log, Gate) {
        let (log, gate) = (Log::default(), Gate::default());
        let disk = SlowDisk {
            memory: MemoryEngine::default(),
            log: log.clone(),
            gate: gate.clone(),
        };
        let store = Store::open(Box::new(disk), ActorId::new("r", 1 << 20), SetLimits::NONE);
        let mut config = NodeConfig::new("r", "127.0.0.1:1".parse().unwrap());
        config.fsync = fsync;
        let shared =
            NodeShared::with_store(config, 1, Arc::new(store.unwrap()), HintStore::default());
        (shared.unwrap(), log, gate)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sent_beside_a_write_does_not_wait_for_the_writes_fsync() {
        use crate::node::peers::{Peers, Role};
        use crate::node::replicas::ReplicaLinks;

        let (shared, _log, gate) = slow_node(Fsync::Always);
        let name = Role::Storage.actor_name(&shared.me);
        let (storage, actor) = Actor::spawn(Some(name), StorageActor, Arc::clone(&shared))
            .await
            .unwrap();
        let peers = Peers::default();
        peers.insert(storage.get_cell());
        let links = ReplicaLinks::new(Arc::new(peers), Default::default());
        let source = NodeShared::new(NodeConfig::new("c", "127.0.0.1:1".parse().unwrap()), 1);
        let ReplicaRequest::Put(write) = put(&source.unwrap(), "k") else {
            unreachable!("put makes a put")
        };

        // No fsync can finish while the gate is shut. Both calls are queued in the same turn,
        // so one batch would carry them both if they shared a link.
        let shut = gate.shut();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut written = tokio::spawn(links.put_untimed(&shared.me, write, deadline));
        let read = links.get(&shared.me, Key::from_static(b"k"), deadline);
        let read = tokio::time::timeout(Duration::from_secs(10), read).await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the read waited for the write's fsync: {read:?}"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut written)
                .await
                .is_err(),
            "the write was acked before any fsync"
        );
        drop(shut);
        let acked = tokio::time::timeout(Duration::from_secs(10), written).await;
        assert!(matches!(acked, Ok(Ok(Ok(())))), "{acked:?}");
        storage.stop(None);
        actor.await.unwrap();
    }

    async fn batches_are_acked_only_once_a_sync_covers_them(fsync: Fsync) {
        let (shared, log, _gate) = slow_node(fsync);
        assert!(
            shared.ack_after_sync(),
            "a durable store's writes are acked after a sync, whatever the fsync mode"
        );
        let (storage, actor) = Actor::spawn(None, StorageActor, shared).await.unwrap();
        let source = NodeShared::new(NodeConfig::new("c", "127.0.0.1:1".parse().unwrap()), 1);
        let source = source.unwrap();

        // Batches one after the other, each sent while the fsyncs of the ones before it may
        // still run: each ack must find its write durable.
        let mut acks = Vec::new();
        for i in 0..12 {
            let key = format!("k{i}");
            let batch = Encoded::encode(&vec![put(&source, &key)]).unwrap();
            let (storage, log) = (storage.clone(), log.clone());
            acks.push(tokio::spawn(async move {
                let answer = storage
                    .call(
                        |port| StorageMsg::Batch(batch, port),
                        Some(Duration::from_secs(10)),
                    )
                    .await;
                let durable = log.is_durable(key.as_bytes());
                (answer, durable)
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for ack in acks {
            let (answer, durable) = ack.await.unwrap();
            let Ok(CallResult::Success(Payload(Ok(replies)))) = answer else {
                panic!("the batch was not answered: {answer:?}");
            };
            assert_eq!(replies, vec![ReplicaReply::Stored]);
            assert!(durable, "acked before a sync covered the write");
        }
        storage.stop(None);
        actor.await.unwrap();
    }
}

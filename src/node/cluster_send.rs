//! The write half of a cluster connection: frames written in one turn of the scheduler leave
//! in one send.
//!
//! ractor_cluster's writer task sends whatever frames are queued when it wakes, and it wakes
//! as soon as the first one is queued, so under load about half of a node's sends carried a
//! single frame, and a send on a TCP socket (on loopback it also runs the receiving side's
//! network stack) costs several microseconds whatever it carries. Here a write only fills a
//! buffer, and a flush wakes this connection's sender task, which yields once (as a batch
//! link does) so that the tasks ready on its thread write their frames too, then sends
//! everything buffered with one write. A full buffer holds the writer back until the sender
//! has taken it; a failed send fails every later write. Dropping the write half (ractor_cluster
//! aborts its writer task when a session ends) ends the sender once what was buffered has
//! been sent, or after [`LINGER`] when the peer does not take it (a frozen peer would otherwise
//! keep the socket and the task for as long as TCP keeps retrying), and closes the socket.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Bytes buffered at most before a writer waits for the sender (one frame larger than this
/// is still taken, alone).
pub const SEND_BUFFER: usize = 256 << 10;

// What a send buffer keeps of its capacity between bursts: a burst or frame larger than this
// allocates again rather than keep its size for the connection's life.
const KEPT: usize = 64 << 10;

/// How long a connection whose writer went away may still take to send what it buffered.
pub const LINGER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    // The writer waiting for room.
    waiting: Option<Waker>,
    failed: Option<io::ErrorKind>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    outbox: Mutex<Outbox>,
    // Wakes the sender: something to send, or the writer went away.
    wake: Notify,
    // Told once, when the writer went away.
    dropped: Notify,
}

impl Outbox {
    // The error of every write and flush once a send failed.
    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(io::Error::new(kind, "an earlier send failed")),
            None => Ok(()),
        }
    }

    fn wake_writer(&mut self) {
        if let Some(writer) = self.waiting.take() {
            writer.wake();
        }
    }
}

impl Shared {
    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        // Plain data: a panic elsewhere cannot leave it half-changed.
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writing side handed to ractor_cluster; its sender task owns the socket's write half.
pub struct CoalescingWrite {
    shared: Arc<Shared>,
}

impl CoalescingWrite {
    /// Wraps `inner`, starting its sender task on the current runtime.
    pub fn spawn<W>(inner: W) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared::default());
        tokio::spawn(send(Arc::clone(&shared), inner));
        CoalescingWrite { shared }
    }
}

impl AsyncWrite for CoalescingWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut outbox = self.shared.outbox();
        if let Err(e) = outbox.check() {
            return Poll::Ready(Err(e));
        }
        if !outbox.bytes.is_empty() && outbox.bytes.len() + data.len() > SEND_BUFFER {
            outbox.waiting = Some(cx.waker().clone());
            drop(outbox);
            // Taken by the sender in the meantime: no wake-up would come.
            self.shared.wake.notify_one();
            return Poll::Pending;
        }
        outbox.bytes.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outbox = self.shared.outbox();
        if let Err(e) = outbox.check() {
            return Poll::Ready(Err(e));
        }
        let pending = !outbox.bytes.is_empty();
        drop(outbox);
        if pending {
            self.shared.wake.notify_one();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl Drop for CoalescingWrite {
    fn drop(&mut self) {
        self.shared.outbox().closed = true;
        self.shared.wake.notify_one();
        self.shared.dropped.notify_one();
    }
}

// The sender task: one write of everything buffered per wake-up, after one yield.
async fn send<W: AsyncWrite + Unpin>(shared: Arc<Shared>, mut inner: W) {
    let mut taken = Vec::new();
    loop {
        shared.wake.notified().await;
        tokio::task::yield_now().await;
        let closed = {
            let mut outbox = shared.outbox();
            std::mem::swap(&mut taken, &mut outbox.bytes);
            outbox.wake_writer();
            outbox.closed
        };
        if !taken.is_empty() {
            if let Err(e) = write_out(&shared, &mut inner, &taken).await {
                let mut outbox = shared.outbox();
                outbox.failed = Some(e.kind());
                outbox.wake_writer();
                return;
            }
            taken.clear();
            taken.shrink_to(KEPT);
        }
        if closed {
            // Nothing can be buffered any more. Dropping `inner` closes the write side.
            let _ = tokio::time::timeout(LINGER, inner.shutdown()).await;
            return;
        }
    }
}

// Waits as long as the socket takes while the connection lives, and LINGER more at most
// once its writer went away.
async fn write_out<W: AsyncWrite + Unpin>(
    shared: &Shared,
    inner: &mut W,
    bytes: &[u8],
) -> io::Result<()> {
    let mut write = std::pin::pin!(inner.write_all(bytes));
    tokio::select! {
        written = &mut write => return written,
        () = shared.dropped.notified() => {}
    }
    tokio::time::timeout(LINGER, write)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::AsyncReadExt;

    use super::*;

    /// Records each write it is given; fails every write once `fail` is set.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        fail: Arc<AtomicBool>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.fail.load(Ordering::SeqCst) {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            self.writes.lock().unwrap().push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        until_in(Duration::from_secs(5), what, check).await;
    }

    async fn until_in(limit: Duration, what: &str, check: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        while !check() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_flushed_in_one_turn_leave_in_one_write_in_order() {
        let recorder = Recorder::default();
        let mut write = CoalescingWrite::spawn(recorder.clone());
        for frame in [&b"one"[..], b"two", b"three"] {
            write.write_all(frame).await.unwrap();
            write.flush().await.unwrap();
        }
        let writes = || recorder.writes.lock().unwrap().clone();
        until("the frames are sent", || !writes().is_empty()).await;
        assert_eq!(writes(), vec![b"onetwothree".to_vec()]);

        // A later flush is a later send.
        write.write_all(b"four").await.unwrap();
        write.flush().await.unwrap();
        until("the next frame is sent", || writes().len() == 2).await;
        assert_eq!(writes()[1], b"four");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_buffer_holds_the_writer_back_until_the_sender_took_it() {
        let recorder = Recorder::default();
        let mut write = CoalescingWrite::spawn(recorder.clone());
        let frame = vec![7u8; SEND_BUFFER / 2 + 1];
        // The second frame does not fit beside the first: it waits for the sender.
        write.write_all(&frame).await.unwrap();
        write.write_all(&frame).await.unwrap();
        write.flush().await.unwrap();
        let total = || {
            recorder
                .writes
                .lock()
                .unwrap()
                .iter()
                .map(Vec::len)
                .sum::<usize>()
        };
        until("both frames are sent", || total() == 2 * frame.len()).await;
        assert_eq!(
            recorder.writes.lock().unwrap().len(),
            2,
            "never both at once"
        );
        // A frame larger than the buffer still goes, alone.
        let big = vec![1u8; SEND_BUFFER * 2];
        write.write_all(&big).await.unwrap();
        write.flush().await.unwrap();
        until("the large frame is sent", || {
            total() == 2 * frame.len() + big.len()
        })
        .await;
        // The buffers it passed through do not stay that large.
        write.write_all(b"small").await.unwrap();
        write.flush().await.unwrap();
        let sent = 2 * frame.len() + big.len() + 5;
        until("the small frame is sent", || total() == sent).await;
        assert!(write.shared.outbox().bytes.capacity() <= KEPT);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_send_fails_the_writes_after_it() {
        let recorder = Recorder::default();
        let mut write = CoalescingWrite::spawn(recorder.clone());
        recorder.fail.store(true, Ordering::SeqCst);
        write.write_all(b"lost").await.unwrap();
        write.flush().await.unwrap();
        let failed = || write.shared.outbox().failed.is_some();
        until("the send failed", failed).await;
        assert!(write.write_all(b"next").await.is_err());
        assert!(write.flush().await.is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_write_half_sends_what_was_buffered_then_closes_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialled, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (_read, write_half) = dialled.unwrap().into_split();
        let mut write = CoalescingWrite::spawn(write_half);
        write.write_all(b"last words").await.unwrap();
        drop(write);
        let mut peer = accepted.unwrap().0;
        let mut got = Vec::new();
        // Ends at the peer's end of stream: the write side was closed.
        tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut got))
            .await
            .expect("the socket's write side closes")
            .unwrap();
        assert_eq!(got, b"last words");
    }

    /// Takes nothing, like a frozen peer's full socket; tells when it is dropped.
    struct Frozen(Arc<AtomicBool>);

    impl AsyncWrite for Frozen {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _data: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl Drop for Frozen {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_that_takes_nothing_keeps_the_socket_no_longer_than_the_linger() {
        let dropped = Arc::new(AtomicBool::new(false));
        let mut write = CoalescingWrite::spawn(Frozen(Arc::clone(&dropped)));
        write.write_all(b"never taken").await.unwrap();
        write.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !dropped.load(Ordering::SeqCst),
            "the send waits while the writer lives"
        );
        let gone = tokio::time::Instant::now();
        drop(write);
        until_in(LINGER * 3, "the socket is let go", || {
            dropped.load(Ordering::SeqCst)
        })
        .await;
        assert!(gone.elapsed() >= LINGER, "not before the linger");
    }
}

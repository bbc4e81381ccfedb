//! Abuse of a node's HTTP port, for `bench --flood` and the flood test: malformed requests,
//! bad keys and contexts, oversized bodies (declared and chunked), and headers that never end.
//!
//! Every connection carries one abusive request and reads at most the first bytes of the
//! answer (or waits for the node to cut it off), so a flood costs the node whatever its
//! bounds let it cost, never more.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The kinds of abuse; connection `i` of a flood sends kind `i % KINDS`.
pub const KINDS: usize = 5;
/// How long one abusive connection waits for an answer.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Floods `addrs` with `connections` concurrent abusive connections (spread over the nodes
/// and kinds) until `stop` is set; answers with the number of requests sent.
pub async fn flood(addrs: Vec<SocketAddr>, connections: usize, stop: Arc<AtomicBool>) -> u64 {
    if addrs.is_empty() {
        return 0;
    }
    let workers = (0..connections).map(|i| {
        let (addr, stop) = (addrs[i % addrs.len()], Arc::clone(&stop));
        tokio::spawn(async move {
            let requests = Requests::new();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                exchange(addr, requests.kind(i % KINDS)).await;
                sent += 1;
            }
            sent
        })
    });
    futures::future::join_all(workers)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .sum()
}

/// The bytes of each kind of abusive request.
struct Requests {
    oversized: Vec<u8>,
    chunked: Vec<u8>,
}

impl Requests {
    fn new() -> Self {
        let oversized = format!(
            "PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            64 << 20
        )
        .into_bytes();
        let mut chunked =
            b"PUT /kv/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let chunk = vec![b'x'; 256 * 1024];
        for _ in 0..8 {
            chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            chunked.extend_from_slice(&chunk);
            chunked.extend_from_slice(b"\r\n");
        }
        Requests { oversized, chunked }
    }

    fn kind(&self, kind: usize) -> &[u8] {
        match kind {
            0 => b"GARBAGE \x00\xff nonsense\r\n\r\n",
            1 => b"GET /kv/%zz?r=abc HTTP/1.1\r\nHost: x\r\nX-Dynamo-Context: !!\r\n\r\n",
            2 => &self.oversized,
            3 => &self.chunked,
            // Headers that never end: held until the node cuts the connection off.
            _ => b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        }
    }
}

/// Sends `request` on a fresh connection and reads until the node answers or closes.
async fn exchange(addr: SocketAddr, request: &[u8]) {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        // Refused at once (e.g. the connection bound): do not spin on it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        return;
    };
    let _ = tcp.write_all(request).await;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(ANSWER_WAIT, tcp.read(&mut buf)).await;
}

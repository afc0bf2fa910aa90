//! A TCP proxy on 127.0.0.1 between the clients and the server that delays chunks, cuts
//! requests part-way, drops answers after the server sent them and partitions the network.
//! Its upstream can change (the server restarts on a new port) or be absent (server down).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::plan::Faults;

/// What the proxy did, for the run's figures.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub cut_requests: AtomicU64,
    pub dropped_responses: AtomicU64,
}

struct Shared {
    upstream: Mutex<Option<SocketAddr>>,
    faults: Mutex<Faults>,
    /// Bumped to cut every open connection.
    cut_all: watch::Sender<u64>,
    seed: u64,
    stats: ProxyStats,
}

impl Shared {
    fn faults(&self) -> Faults {
        self.faults.lock().map(|f| *f).unwrap_or_default()
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(seed: u64) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(None),
            faults: Mutex::new(Faults::default()),
            cut_all: watch::channel(0).0,
            seed,
            stats: ProxyStats::default(),
        });
        let accept = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let mut index = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                index += 1;
                accept.stats.connections.fetch_add(1, Ordering::Relaxed);
                let upstream = accept.upstream.lock().ok().and_then(|u| *u);
                let (Some(upstream), false) = (upstream, accept.faults().partitioned) else {
                    accept.stats.refused.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                };
                let conn = Arc::clone(&accept);
                tokio::spawn(async move { pump(conn, client, upstream, index).await });
            }
        });
        Ok(Proxy { addr, shared, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Where new connections go; `None` refuses them (the server is down).
    pub fn set_upstream(&self, upstream: Option<SocketAddr>) {
        if let Ok(mut u) = self.shared.upstream.lock() {
            *u = upstream;
        }
    }

    pub fn set_faults(&self, faults: Faults) {
        let partition_starts = faults.partitioned && !self.shared.faults().partitioned;
        if let Ok(mut f) = self.shared.faults.lock() {
            *f = faults;
        }
        if partition_starts {
            self.shared.cut_all.send_modify(|g| *g += 1);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.cut_all.send_modify(|g| *g += 1);
    }
}

enum Ended {
    /// The sender closed its side normally.
    Eof,
    /// A fault or an error ended the connection.
    Cut,
}

async fn pump(shared: Arc<Shared>, client: TcpStream, upstream: SocketAddr, index: u64) {
    let mut cut_all = shared.cut_all.subscribe();
    let Ok(Ok(server)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(upstream)).await
    else {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let base = shared.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut up_rng = fastrand::Rng::with_seed(base);
    let mut down_rng = fastrand::Rng::with_seed(base.rotate_left(17) ^ 0x5851_F42D);
    let up_shared = Arc::clone(&shared);
    let up = async move {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) => {
                    let _ = server_write.shutdown().await;
                    return Ended::Eof;
                }
                Ok(n) => n,
                Err(_) => return Ended::Cut,
            };
            let faults = up_shared.faults();
            delay(&mut up_rng, faults).await;
            if up_rng.u32(0..1000) < faults.cut_per_mille {
                // Part of the request reaches the server, then the connection dies.
                let part = up_rng.usize(0..n);
                let _ = server_write.write_all(&buf[..part]).await;
                up_shared.stats.cut_requests.fetch_add(1, Ordering::Relaxed);
                return Ended::Cut;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return Ended::Cut;
            }
        }
    };
    let down_shared = Arc::clone(&shared);
    let down = async move {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let faults = down_shared.faults();
            delay(&mut down_rng, faults).await;
            if down_rng.u32(0..1000) < faults.drop_per_mille {
                // The server answered (and may have committed); the client never hears it.
                down_shared
                    .stats
                    .dropped_responses
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::pin!(up, down);
    let mut up_open = true;
    loop {
        tokio::select! {
            ended = &mut up, if up_open => match ended {
                Ended::Eof => up_open = false,
                Ended::Cut => return,
            },
            () = &mut down => return,
            _ = cut_all.changed() => return,
        }
    }
}

async fn delay(rng: &mut fastrand::Rng, faults: Faults) {
    let mut ms = 0;
    if faults.delay_ms > 0 {
        ms += rng.u64(0..=faults.delay_ms);
    }
    if rng.u32(0..1000) < faults.stall_per_mille {
        ms += rng.u64(1100..=2000);
    }
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

//! A TCP proxy on loopback in front of a server that injects real network faults: refused
//! connections, a lost response after the server committed, a cut request, a stalled peer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the fault proxy does with the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways.
    Forward,
    /// Accept and close at once (server down).
    Refuse,
    /// Answer `HTTP 500` without forwarding.
    Answer500,
    /// Forward the request, wait for the server's answer, then cut the connection
    /// without passing the answer on (the response is lost after the server committed).
    CutAfterResponse,
    /// Forward part of the request, then cut the connection: the client has sent it (it may
    /// have arrived), the server never got it whole and did nothing.
    CutRequest,
    /// Forward one complete response on this connection, then close it and
    /// refuse every later connection (the server goes down between two requests).
    OneResponseThenDown,
}

/// A TCP proxy on loopback in front of a server, with faults for the next `n` connections.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect.
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<(Fault, usize)>>,
    /// Bumped on every change of fault; open connections then close.
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections open now (their handler still runs).
    open: Arc<AtomicUsize>,
    /// While set, open connections stop passing the server's bytes on (a stalled peer).
    stalled: Arc<std::sync::atomic::AtomicBool>,
    /// While `true`, the server's bytes are kept back (not lost) until it turns `false`.
    held: Arc<tokio::sync::watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new((Fault::Forward, 0usize)));
        let connections = Arc::new(AtomicUsize::new(0));
        let state2 = Arc::clone(&state);
        let connections2 = Arc::clone(&connections);
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let generation2 = Arc::clone(&generation);
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stalled2 = Arc::clone(&stalled);
        let open = Arc::new(AtomicUsize::new(0));
        let open2 = Arc::clone(&open);
        let held = Arc::new(tokio::sync::watch::channel(false).0);
        let held2 = Arc::clone(&held);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                connections2.fetch_add(1, Ordering::SeqCst);
                let fault = {
                    let mut s = state2.lock().unwrap();
                    if s.1 == usize::MAX {
                        s.0
                    } else if s.1 > 0 {
                        s.1 -= 1;
                        s.0
                    } else {
                        Fault::Forward
                    }
                };
                let kill = generation2.subscribe();
                let open = Arc::clone(&open2);
                open.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&state2);
                let stalled = Arc::clone(&stalled2);
                let held = held2.subscribe();
                tokio::spawn(async move {
                    handle(client, upstream, fault, state, kill, stalled, held).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FaultProxy {
            addr,
            state,
            generation,
            connections,
            open,
            stalled,
            held,
            task,
        }
    }

    /// Answers are kept back: requests reach the server (which does its work and answers),
    /// but its bytes wait in the proxy until [`release`](Self::release). A slow server, as
    /// slow as the test wants, without a timer.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Passes the answers kept back by [`hold`](Self::hold) on, and forwards again.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next `n` connections, then forwards again.
    pub fn fault_next(&self, fault: Fault, n: usize) {
        *self.state.lock().unwrap() = (fault, n);
        self.generation.send_modify(|g| *g += 1);
    }

    /// [`fault_next`](Self::fault_next), then waits until the connections open before it are
    /// closed and the client had a moment to see that, so the next request cannot go out on
    /// an old keep-alive connection that the proxy is cutting at that very moment.
    pub async fn fault_next_settled(&self, fault: Fault, n: usize) {
        self.fault_next(fault, n);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    /// Refuses every connection (and cuts the open ones) until `heal`.
    pub fn go_down(&self) {
        *self.state.lock().unwrap() = (Fault::Refuse, usize::MAX);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards again (and stops stalling).
    pub fn heal(&self) {
        *self.state.lock().unwrap() = (Fault::Forward, 0);
        self.stalled.store(false, Ordering::SeqCst);
    }

    /// Open connections stay open but the server's bytes stop arriving.
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The length of the first whole response in `buf` (head and body), once it has all arrived:
/// a body of `content-length` bytes, or a chunked one (compressed answers are streamed).
fn response_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(len) = len {
        return Some(end + len);
    }
    let chunked = head.lines().any(|l| {
        l.strip_prefix("transfer-encoding:")
            .is_some_and(|v| v.contains("chunked"))
    });
    if chunked {
        return chunked_len(&buf[end..]).map(|len| end + len);
    }
    None
}

/// The length of a chunked body at the start of `body` (through its last chunk and
/// trailers), once it has all arrived.
fn chunked_len(body: &[u8]) -> Option<usize> {
    let line_end = |from: usize| {
        body.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let mut at = 0;
    loop {
        let end = line_end(at)?;
        let size_text = std::str::from_utf8(&body[at..end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = end + 2;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let end = line_end(at)?;
                if end == at {
                    return Some(at + 2);
                }
                at = end + 2;
            }
        }
        at = at.checked_add(size)?.checked_add(2)?;
        if at > body.len() {
            return None;
        }
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: std::net::SocketAddr,
    fault: Fault,
    state: Arc<Mutex<(Fault, usize)>>,
    mut kill: tokio::sync::watch::Receiver<u64>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    mut held: tokio::sync::watch::Receiver<bool>,
) {
    match fault {
        Fault::OneResponseThenDown => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let mut cbuf = vec![0u8; 1 << 16];
            let mut response = Vec::new();
            let mut sbuf = vec![0u8; 1 << 16];
            loop {
                tokio::select! {
                    n = cr.read(&mut cbuf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => { if sw.write_all(&cbuf[..n]).await.is_err() { return; } }
                    },
                    n = sr.read(&mut sbuf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            response.extend_from_slice(&sbuf[..n]);
                            if let Some(total) = response_len(&response) {
                                if response.len() >= total {
                                    *state.lock().unwrap() = (Fault::Refuse, usize::MAX);
                                    let _ = cw.write_all(&response[..total]).await;
                                    let _ = cw.shutdown().await;
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
        Fault::Refuse => drop(client),
        Fault::CutRequest => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut buf = vec![0u8; 1 << 16];
            if let Ok(n) = client.read(&mut buf).await {
                let _ = server.write_all(&buf[..n / 2]).await;
            }
            drop(server);
            drop(client);
        }
        Fault::Answer500 => {
            let mut buf = [0u8; 65536];
            let _ = client.read(&mut buf).await;
            let _ = client
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
            let _ = client.shutdown().await;
        }
        Fault::CutAfterResponse => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut cr, _cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let mut buf = vec![0u8; 1 << 16];
            let mut sbuf = vec![0u8; 1 << 16];
            // Forward the request until the server starts answering, then cut.
            loop {
                tokio::select! {
                    n = cr.read(&mut buf) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(n) => { if sw.write_all(&buf[..n]).await.is_err() { return; } }
                    },
                    n = sr.read(&mut sbuf) => {
                        let _ = n;
                        return;
                    }
                }
            }
        }
        Fault::Forward => {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = server.set_nodelay(true);
            let _ = client.set_nodelay(true);
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let up = async {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if sw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            let down = async {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stalled.load(Ordering::SeqCst) {
                                // Swallow: the peer looks alive at TCP level but says nothing.
                                continue;
                            }
                            if held.wait_for(|held| !*held).await.is_err() {
                                break;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            };
            tokio::select! {
                () = up => {}
                () = down => {}
                _ = kill.changed() => {}
            }
        }
    }
}

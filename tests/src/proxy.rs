//! A fault-injecting TCP proxy for delivery tests: it forwards connections to
//! an upstream address and, on command, delays them, refuses them, blackholes
//! them (accepts and forwards nothing, as a partition does), cuts every open
//! connection, or cuts one in the middle of a message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward.
    Pass,
    /// Forward, each chunk after this delay.
    Delay(Duration),
    /// Accept, forward nothing, answer nothing.
    Blackhole,
    /// Accept and close at once.
    Refuse,
}

/// What the proxy has done.
#[derive(Debug, Default)]
pub struct ProxyCounts {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections cut (all at once, or in mid-message).
    pub cuts: AtomicU64,
    /// Connections cut in the middle of a message.
    pub mid_message_cuts: AtomicU64,
    /// Connections refused.
    pub refused: AtomicU64,
    /// Blackhole periods.
    pub blackholes: AtomicU64,
}

struct State {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    /// Every open connection's cancel token; cancelled to cut it.
    open: Mutex<Vec<(u64, CancellationToken)>>,
    next_id: AtomicU64,
    cut_mid_message: AtomicBool,
    counts: ProxyCounts,
}

impl State {
    fn mode(&self) -> Mode {
        *self
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cut_all(&self) -> usize {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.len();
        for (_, token) in open.drain(..) {
            token.cancel();
        }
        n
    }

    fn forget(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(i, _)| *i != id);
    }
}

/// A running proxy; stopped when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("proxy runtime")?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            upstream,
            mode: Mutex::new(Mode::Pass),
            open: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            cut_mid_message: AtomicBool::new(false),
            counts: ProxyCounts::default(),
        });
        let accept_state = Arc::clone(&state);
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = Arc::clone(&accept_state);
                tokio::spawn(handle(state, client));
            }
        });
        Ok(Self {
            addr,
            state,
            runtime: Some(runtime),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the mode for new traffic. Leaving `Blackhole` cuts the
    /// connections it held, as a partition that heals leaves them dead.
    pub fn set_mode(&self, mode: Mode) {
        let before = std::mem::replace(
            &mut *self
                .state
                .mode
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            mode,
        );
        if mode == Mode::Blackhole && before != Mode::Blackhole {
            self.state.counts.blackholes.fetch_add(1, Ordering::Relaxed);
        }
        if before == Mode::Blackhole && mode != Mode::Blackhole {
            let n = self.state.cut_all();
            self.state
                .counts
                .cuts
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Cuts every open connection now.
    pub fn cut_all(&self) -> usize {
        let n = self.state.cut_all();
        self.state
            .counts
            .cuts
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The next chunk a client sends is forwarded only in part, then its
    /// connection is cut.
    pub fn cut_next_message(&self) {
        self.state.cut_mid_message.store(true, Ordering::Relaxed);
    }

    /// What the proxy has done.
    pub fn counts(&self) -> &ProxyCounts {
        &self.state.counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.cut_all();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(state: Arc<State>, client: TcpStream) {
    state.counts.connections.fetch_add(1, Ordering::Relaxed);
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let token = CancellationToken::new();
    state
        .open
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((id, token.clone()));
    serve(&state, client, &token).await;
    state.forget(id);
}

async fn serve(state: &Arc<State>, client: TcpStream, token: &CancellationToken) {
    match state.mode() {
        Mode::Refuse => {
            state.counts.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Mode::Blackhole => {
            // Hold the connection open and silent until it is cut.
            token.cancelled().await;
            return;
        }
        Mode::Pass | Mode::Delay(_) => {}
    }
    let Ok(upstream) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let up = pump(
        Arc::clone(state),
        client_read,
        upstream_write,
        token.clone(),
        true,
    );
    let down = pump(
        Arc::clone(state),
        upstream_read,
        client_write,
        token.clone(),
        false,
    );
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = token.cancelled() => {}
    }
    // Dropping both halves closes both connections.
}

/// Copies one direction until end of stream, an error, or a cut.
async fn pump(
    state: Arc<State>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    token: CancellationToken,
    client_to_upstream: bool,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = token.cancelled() => return,
        };
        match state.mode() {
            Mode::Blackhole => {
                // The partition swallows this and everything after it.
                token.cancelled().await;
                return;
            }
            Mode::Delay(d) => tokio::time::sleep(d).await,
            Mode::Pass | Mode::Refuse => {}
        }
        if client_to_upstream && n > 1 && state.cut_mid_message.swap(false, Ordering::Relaxed) {
            let _ = to.write_all(&buf[..n / 2]).await;
            state.counts.cuts.fetch_add(1, Ordering::Relaxed);
            state
                .counts
                .mid_message_cuts
                .fetch_add(1, Ordering::Relaxed);
            token.cancel();
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

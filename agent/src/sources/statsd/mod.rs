//! StatsD and DogStatsD from the applications on this host.
//!
//! A listener thread per socket (UDP, by default `127.0.0.1:8125`, and a
//! Unix datagram socket when configured) reads datagrams, parses each line
//! ([`parse`]) and folds it into the [`Aggregator`] under a short lock. At
//! every sample the source moves what was folded into the agent's
//! [`Windows`], so StatsD series ship in the same batches, through the same
//! spool, as the system's:
//!
//! | StatsD | Prometheus |
//! |---|---|
//! | `name:v\|c` (with `@rate`: v/rate) | counter `name_total`, cumulative |
//! | `name:v\|g`, `name:+v\|g` | gauge `name` |
//! | `name:v\|ms` | windowed `name_seconds` (v/1000), exact per window |
//! | `name:v\|h`, `name:v\|d` | windowed `name` |
//! | `name:member\|s` | gauge `name`: distinct members this flush |
//!
//! Names: `.`, `-` and every other character outside `[A-Za-z0-9_]`
//! become `_`, a leading digit gets a `_`, then `prefix` goes in front;
//! tags become labels the same way, and a tag naming `instance` or `job`
//! refuses the line, as does a name in the agent's own families (`node_`,
//! `process_`, `vigil_`). A series key is built in a reused buffer, so a line
//! of a known series allocates nothing.
//!
//! Limits: at most `max_series` StatsD series, and at most
//! `max_window_samples` timer/histogram samples and set members between two
//! flushes; what is over is dropped and counted
//! (`vigil_agent_statsd_dropped_total{reason}`), and each refused series
//! name is logged once.

pub mod parse;

use std::collections::HashSet;

/// Series keys are hashed once per line: foldhash, not SipHash (the
/// keys come from local applications, and their number is bounded).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::{Source, SourceError};
use crate::config::StatsdConfig;
use crate::window::{FamilyKind, RecordError, Windows};
use parse::{Invalid, Kind};

/// Timer values are in seconds once mapped: recorded in microseconds, with
/// Prometheus's default buckets.
pub const SECONDS: vigil_shared::histogram::Ladder = vigil_shared::histogram::Ladder {
    scale: 1e6,
    bounds: &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
};

/// Histogram and distribution values have no known unit: recorded in
/// thousandths, with Prometheus's default buckets.
pub const PLAIN: vigil_shared::histogram::Ladder = vigil_shared::histogram::Ladder {
    scale: 1e3,
    bounds: &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ],
};

/// The receive buffer: room for the largest UDP datagram. At 64 KiB it is
/// at malloc's mmap threshold (see `memory`), so it is mapped on its own
/// and only the pages datagrams reach become resident.
const DATAGRAM: usize = 64 * 1024;

/// How long a listener whose socket could not be bound waits to try again.
const REBIND: Duration = Duration::from_secs(10);

/// Most refused series names logged.
const LOGGED_NAMES: usize = 1_000;

/// One StatsD series between samples.
#[derive(Debug)]
struct Entry {
    kind: Kind,
    family: String,
    labels: Vec<(String, String)>,
    /// Counter: the cumulative total; gauge: the value; set: members.
    value: f64,
    /// Timer and histogram samples not yet moved into the windows.
    pending: Vec<f64>,
    /// Set members (hashed) since the last flush.
    members: HashSet<u64>,
}

/// Counts kept by the aggregator.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Datagrams read.
    pub datagrams: u64,
    /// Lines read (well-formed or not).
    pub lines: u64,
    /// Refused lines, by [`Invalid::index`].
    pub invalid: [u64; Invalid::ALL.len()],
    /// Samples dropped because `max_series` StatsD series exist.
    pub dropped_series: u64,
    /// Samples dropped because `max_window_samples` were held.
    pub dropped_window: u64,
    /// TCP connections accepted.
    pub tcp_connections: u64,
    /// TCP connections refused: `MAX_TCP_CONNECTIONS` were open.
    pub tcp_refused: u64,
}

/// StatsD series folded between two samples of the source.
#[derive(Debug)]
pub struct Aggregator {
    entries: Vec<Entry>,
    /// Entry by series key (mapped name and sorted, mapped tags).
    index: HashMap<String, usize>,
    /// Entry by the line's own text of kind, name and tags: a line of a
    /// known series skips mapping and sorting. At most 4 × `max_series`.
    by_raw: HashMap<String, usize>,
    raw: String,
    /// Each family's kind class ([`kind_class`]).
    families: HashMap<String, u8>,
    key: String,
    family: String,
    tags: Vec<(String, String)>,
    prefix: String,
    max_series: usize,
    max_window_samples: usize,
    held: usize,
    counts: Counts,
    logged: HashSet<String>,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(prefix: &str, max_series: usize, max_window_samples: usize) -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::default(),
            by_raw: HashMap::default(),
            raw: String::with_capacity(256),
            families: HashMap::default(),
            key: String::with_capacity(256),
            family: String::with_capacity(128),
            tags: Vec::new(),
            prefix: prefix.to_string(),
            max_series,
            max_window_samples,
            held: 0,
            counts: Counts::default(),
            logged: HashSet::new(),
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Series held.
    pub fn series(&self) -> usize {
        self.entries.len()
    }

    /// Folds one datagram (newline-separated lines) in.
    pub fn datagram(&mut self, bytes: &[u8]) {
        self.counts.datagrams += 1;
        self.lines(bytes);
    }

    /// Folds newline-separated lines in (a datagram, or what a TCP
    /// connection sent up to its last newline).
    pub fn lines(&mut self, bytes: &[u8]) {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(bytes),
        };
        let mut rest = text.as_ref();
        while !rest.is_empty() {
            let (line, after) = match rest.bytes().position(|b| b == b'\n') {
                Some(i) => (
                    rest.get(..i).unwrap_or_default(),
                    rest.get(i + 1..).unwrap_or_default(),
                ),
                None => (rest, ""),
            };
            rest = after;
            // A byte test, not `strip_suffix`: that is a call to memcmp.
            let line = if line.as_bytes().last() == Some(&b'\r') {
                line.get(..line.len() - 1).unwrap_or_default()
            } else {
                line
            };
            if line.is_empty() {
                continue;
            }
            self.counts.lines += 1;
            if let Err(reason) = self.line(line) {
                self.counts.invalid[reason.index()] += 1;
            }
        }
    }

    /// Builds the family name into `self.family`.
    fn family_name(&mut self, name: &str, kind: Kind) -> Result<(), Invalid> {
        self.family.clear();
        self.family.push_str(&self.prefix);
        if !parse::map_name(name, &mut self.family) {
            return Err(Invalid::BadName);
        }
        // The families of the agent's other sources: a StatsD gauge named
        // `node_load1` would otherwise overwrite the host's own value.
        if ["node_", "process_", "vigil_"]
            .iter()
            .any(|p| self.family.starts_with(p))
        {
            return Err(Invalid::ReservedName);
        }
        let suffix = match kind {
            Kind::Counter => "_total",
            Kind::Timer => "_seconds",
            _ => "",
        };
        if !self.family.ends_with(suffix) {
            self.family.push_str(suffix);
        }
        Ok(())
    }

    /// Parses tags into `self.tags` (reusing its strings), sorted by name.
    fn parse_tags(&mut self, tags: &str) -> Result<(), Invalid> {
        let mut n = 0;
        for tag in tags.split(',').filter(|t| !t.is_empty()) {
            // A tag without a value has no Prometheus equivalent: skipped.
            let Some((name, value)) = tag.split_once(':') else {
                continue;
            };
            if value.is_empty() {
                continue;
            }
            if self.tags.len() <= n {
                self.tags.push((String::new(), String::new()));
            }
            let slot = &mut self.tags[n];
            slot.0.clear();
            if !parse::map_name(name, &mut slot.0) {
                return Err(Invalid::BadTag);
            }
            if slot.0 == "instance" || slot.0 == "job" {
                return Err(Invalid::ReservedTag);
            }
            slot.1.clear();
            slot.1.push_str(value);
            n += 1;
        }
        self.tags.truncate(n);
        if !self.tags.is_sorted() {
            self.tags.sort_unstable();
        }
        self.tags.dedup_by(|a, b| a.0 == b.0);
        Ok(())
    }

    fn line(&mut self, text: &str) -> Result<(), Invalid> {
        let line = parse::line(text)?;
        self.raw.clear();
        self.raw.push(line.kind.tag());
        self.raw.push_str(line.name);
        self.raw.push('|');
        self.raw.push_str(line.tags);
        if let Some(entry) = self
            .by_raw
            .get(self.raw.as_str())
            .and_then(|i| self.entries.get_mut(*i))
        {
            return fold(
                entry,
                &line,
                &mut self.held,
                self.max_window_samples,
                &mut self.counts,
            );
        }
        self.family_name(line.name, line.kind)?;
        self.parse_tags(line.tags)?;
        self.key.clear();
        self.key.push(line.kind.tag());
        self.key.push_str(&self.family);
        for (k, v) in &self.tags {
            self.key.push('\u{1}');
            self.key.push_str(k);
            self.key.push('\u{2}');
            self.key.push_str(v);
        }
        let i = match self.index.get(self.key.as_str()) {
            Some(i) => *i,
            None => {
                if self.entries.len() >= self.max_series {
                    self.counts.dropped_series += 1;
                    if self.logged.len() < LOGGED_NAMES && self.logged.insert(self.family.clone()) {
                        warn!(
                            name = %self.family,
                            limit = self.max_series,
                            "StatsD series dropped: sources.statsd.max_series reached (logged once per name)"
                        );
                    }
                    return Ok(());
                }
                let class = kind_class(line.kind);
                match self.families.get(self.family.as_str()) {
                    Some(c) if *c != class => return Err(Invalid::TypeConflict),
                    Some(_) => {}
                    None => {
                        self.families.insert(self.family.clone(), class);
                    }
                }
                self.entries.push(Entry {
                    kind: line.kind,
                    family: self.family.clone(),
                    labels: self.tags.clone(),
                    value: 0.0,
                    pending: Vec::new(),
                    members: HashSet::new(),
                });
                self.index.insert(self.key.clone(), self.entries.len() - 1);
                self.entries.len() - 1
            }
        };
        if self.by_raw.len() < self.max_series.saturating_mul(4) {
            self.by_raw.insert(self.raw.clone(), i);
        }
        let Some(entry) = self.entries.get_mut(i) else {
            return Ok(());
        };
        fold(
            entry,
            &line,
            &mut self.held,
            self.max_window_samples,
            &mut self.counts,
        )
    }

    /// Moves every series into `out`: counters and gauges as their current
    /// value, timer and histogram samples as window samples, sets as their
    /// distinct count so far. Series the windows refuse are counted.
    pub fn record(&mut self, out: &mut Windows) -> u64 {
        let mut refused = 0;
        let logged = &mut self.logged;
        for entry in &mut self.entries {
            let kind = match entry.kind {
                Kind::Counter => FamilyKind::Counter,
                Kind::Gauge | Kind::Set => FamilyKind::Gauge,
                Kind::Timer => FamilyKind::Histogram(SECONDS),
                Kind::Histogram | Kind::Distribution => FamilyKind::Histogram(PLAIN),
            };
            let Ok(family) = out.family(&entry.family, "Sent by StatsD.", kind) else {
                refused += 1;
                entry.pending.clear();
                continue;
            };
            let labels: Vec<(&str, &str)> = entry
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let outcome: Result<(), RecordError> = match entry.kind {
                Kind::Timer | Kind::Histogram | Kind::Distribution => {
                    let outcome = out.observe_many(family, &labels, &entry.pending);
                    entry.pending.clear();
                    outcome
                }
                _ => out.set(family, &labels, entry.value),
            };
            if let Err(e) = outcome {
                refused += 1;
                super::log_refused(logged, LOGGED_NAMES, "StatsD", &entry.family, &e);
            }
        }
        refused
    }

    /// A flush closed the windows: set members and the samples budget start
    /// again.
    pub fn flushed(&mut self) {
        self.held = 0;
        for entry in &mut self.entries {
            if entry.kind == Kind::Set {
                entry.members.clear();
                entry.value = 0.0;
            }
        }
    }
}

/// Folds one parsed line into its series; `held` counts the samples and
/// set members held since the last flush, up to `max`.
fn fold(
    entry: &mut Entry,
    line: &parse::Line<'_>,
    held: &mut usize,
    max: usize,
    counts: &mut Counts,
) -> Result<(), Invalid> {
    // One number, parsed already: the common case.
    if let Some(x) = line.single {
        match line.kind {
            Kind::Counter => entry.value += x / line.rate,
            Kind::Gauge => {
                if line.values.starts_with(['+', '-']) {
                    entry.value += x;
                } else {
                    entry.value = x;
                }
            }
            _ => sample(entry, line, x, held, max, counts),
        }
        return Ok(());
    }
    match line.kind {
        Kind::Counter => {
            for v in line.values.split(':') {
                entry.value += parse::number(v, line.kind)? / line.rate;
            }
        }
        Kind::Gauge => {
            for v in line.values.split(':') {
                let x = parse::number(v, line.kind)?;
                if v.starts_with('+') || v.starts_with('-') {
                    entry.value += x;
                } else {
                    entry.value = x;
                }
            }
        }
        Kind::Timer | Kind::Histogram | Kind::Distribution => {
            for v in line.values.split(':') {
                sample(entry, line, parse::number(v, line.kind)?, held, max, counts);
            }
        }
        Kind::Set => {
            for member in line.values.split(':') {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                member.hash(&mut h);
                let h = h.finish();
                if entry.members.contains(&h) {
                    continue;
                }
                if *held >= max {
                    counts.dropped_window += 1;
                    continue;
                }
                *held += 1;
                entry.members.insert(h);
            }
            entry.value = entry.members.len() as f64;
        }
    }
    Ok(())
}

/// Holds one timer or histogram value: a sampled line stands for 1/rate
/// samples (at most 1,000); timers go from milliseconds to seconds.
fn sample(
    entry: &mut Entry,
    line: &parse::Line<'_>,
    value: f64,
    held: &mut usize,
    max: usize,
    counts: &mut Counts,
) {
    let weight = (1.0 / line.rate).round().clamp(1.0, 1_000.0) as usize;
    let x = if line.kind == Kind::Timer {
        value * 1e-3
    } else {
        value
    };
    for _ in 0..weight {
        if *held >= max {
            counts.dropped_window += 1;
            continue;
        }
        *held += 1;
        entry.pending.push(x);
    }
}

/// Kinds that may share a family: only a histogram and a distribution.
fn kind_class(kind: Kind) -> u8 {
    match kind {
        Kind::Counter => 0,
        Kind::Gauge => 1,
        Kind::Set => 2,
        Kind::Timer => 3,
        Kind::Histogram | Kind::Distribution => 4,
    }
}

/// Locks the aggregator; a listener that panicked while holding it left
/// nothing half-written that matters, so the lock is taken back.
fn lock(agg: &Mutex<Aggregator>) -> MutexGuard<'_, Aggregator> {
    agg.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether each listener holds its socket, for `vigil_agent_listener_up`.
#[derive(Debug, Default)]
pub struct ListenerState {
    /// `statsd_udp`.
    pub udp: AtomicBool,
    /// `statsd_unix`.
    pub unix: AtomicBool,
    /// `statsd_tcp`.
    pub tcp: AtomicBool,
}

/// The StatsD source: its listeners run on their own threads; sampling
/// moves what they folded into the windows.
pub struct StatsdSource {
    aggregator: Arc<Mutex<Aggregator>>,
    listeners: Arc<ListenerState>,
    udp: Option<SocketAddr>,
    unix: Option<PathBuf>,
    tcp: Option<SocketAddr>,
    refused: u64,
}

impl StatsdSource {
    /// Starts the listeners the config names. A socket that cannot be bound
    /// is logged with what holds it and tried again every 10 s; the agent
    /// starts either way.
    pub fn start(config: &StatsdConfig, max_series: usize) -> Result<Self, SourceError> {
        let aggregator = Arc::new(Mutex::new(Aggregator::new(
            &config.prefix,
            max_series,
            config.max_window_samples,
        )));
        let listeners = Arc::new(ListenerState::default());
        if let Some(addr) = config.udp {
            let (agg, state) = (Arc::clone(&aggregator), Arc::clone(&listeners));
            let buffer = config.receive_buffer.0 as usize;
            std::thread::Builder::new()
                .name("vigil-statsd-udp".into())
                .stack_size(256 * 1024)
                .spawn(move || listen_udp(addr, buffer, &agg, &state))
                .map_err(|e| SourceError(format!("cannot start the StatsD listener: {e}")))?;
        }
        if let Some(path) = config.unix.clone() {
            let (agg, state) = (Arc::clone(&aggregator), Arc::clone(&listeners));
            std::thread::Builder::new()
                .name("vigil-statsd-unix".into())
                .stack_size(256 * 1024)
                .spawn(move || listen_unix(&path, &agg, &state))
                .map_err(|e| SourceError(format!("cannot start the StatsD listener: {e}")))?;
        }
        if let Some(addr) = config.tcp {
            let (agg, state) = (Arc::clone(&aggregator), Arc::clone(&listeners));
            std::thread::Builder::new()
                .name("vigil-statsd-tcp".into())
                .stack_size(256 * 1024)
                .spawn(move || listen_tcp(addr, &agg, &state))
                .map_err(|e| SourceError(format!("cannot start the StatsD listener: {e}")))?;
        }
        Ok(Self {
            aggregator,
            listeners,
            udp: config.udp,
            unix: config.unix.clone(),
            tcp: config.tcp,
            refused: 0,
        })
    }

    fn record_own(
        &self,
        out: &mut Windows,
        counts: &Counts,
        series: usize,
    ) -> Result<(), RecordError> {
        let mut up = Vec::new();
        if self.udp.is_some() {
            up.push(("statsd_udp", self.listeners.udp.load(Ordering::Relaxed)));
        }
        if self.unix.is_some() {
            up.push(("statsd_unix", self.listeners.unix.load(Ordering::Relaxed)));
        }
        if self.tcp.is_some() {
            up.push(("statsd_tcp", self.listeners.tcp.load(Ordering::Relaxed)));
        }
        super::listener::record_up(out, &up)?;
        if self.tcp.is_some() {
            let f = out.family(
                "vigil_agent_statsd_tcp_connections_total",
                "StatsD TCP connections, by outcome (accepted; refused: 64 were open).",
                FamilyKind::Counter,
            )?;
            out.set(f, &[("outcome", "accepted")], counts.tcp_connections as f64)?;
            out.set(f, &[("outcome", "refused")], counts.tcp_refused as f64)?;
        }
        for (name, help, kind, value) in [
            (
                "vigil_agent_statsd_datagrams_total",
                "StatsD datagrams read.",
                FamilyKind::Counter,
                counts.datagrams as f64,
            ),
            (
                "vigil_agent_statsd_lines_total",
                "StatsD lines read, well-formed or not.",
                FamilyKind::Counter,
                counts.lines as f64,
            ),
            (
                "vigil_agent_statsd_series",
                "StatsD series the agent holds.",
                FamilyKind::Gauge,
                series as f64,
            ),
        ] {
            let f = out.family(name, help, kind)?;
            out.set(f, &[], value)?;
        }
        let f = out.family(
            "vigil_agent_statsd_invalid_lines_total",
            "StatsD lines refused, by reason.",
            FamilyKind::Counter,
        )?;
        for reason in Invalid::ALL {
            out.set(
                f,
                &[("reason", reason.reason())],
                counts.invalid[reason.index()] as f64,
            )?;
        }
        let f = out.family(
            "vigil_agent_statsd_dropped_total",
            "StatsD samples dropped: max_series (a new series over sources.statsd.max_series or the agent's max_series), window_full (sources.statsd.max_window_samples held since the last flush).",
            FamilyKind::Counter,
        )?;
        out.set(
            f,
            &[("reason", "max_series")],
            (counts.dropped_series + self.refused) as f64,
        )?;
        out.set(
            f,
            &[("reason", "window_full")],
            counts.dropped_window as f64,
        )?;
        Ok(())
    }
}

impl Source for StatsdSource {
    fn name(&self) -> &'static str {
        "statsd"
    }

    fn sample(&mut self, out: &mut Windows, _now: SystemTime) -> Result<(), SourceError> {
        let (counts, series, refused) = {
            let mut agg = lock(&self.aggregator);
            let refused = agg.record(out);
            (agg.counts().clone(), agg.series(), refused)
        };
        self.refused += refused;
        self.record_own(out, &counts, series)?;
        Ok(())
    }

    fn flushed(&mut self) {
        lock(&self.aggregator).flushed();
    }
}

/// Binds `addr` with a receive buffer of `buffer` bytes (as far as the
/// kernel's `net.core.rmem_max` allows).
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        warn!(error = %e, "cannot set the StatsD socket's receive buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Reads one datagram into the buffer, giving its length.
type Receiver = Box<dyn FnMut(&mut [u8]) -> std::io::Result<usize>>;

/// Binds with `bind`, folds every datagram in, and binds again 10 s after
/// the socket fails or could not be bound (logged once, with `held_by`).
fn listen(
    what: &str,
    mut bind: impl FnMut() -> std::io::Result<Receiver>,
    held_by: impl Fn() -> String,
    up: &AtomicBool,
    agg: &Mutex<Aggregator>,
) {
    let mut logged = false;
    loop {
        match bind() {
            Ok(mut recv) => {
                info!(socket = what, "StatsD listening");
                up.store(true, Ordering::Relaxed);
                let mut buf = vec![0u8; DATAGRAM];
                loop {
                    match recv(&mut buf) {
                        Ok(n) => lock(agg).datagram(buf.get(..n).unwrap_or_default()),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            warn!(socket = what, error = %e, "StatsD socket failed; binding again");
                            break;
                        }
                    }
                }
                up.store(false, Ordering::Relaxed);
            }
            Err(e) if !logged => {
                warn!(
                    socket = what,
                    error = %e,
                    held_by = %held_by(),
                    "StatsD cannot listen; trying again every 10 s (vigil_agent_listener_up is 0)"
                );
                logged = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(REBIND);
    }
}

fn listen_udp(addr: SocketAddr, buffer: usize, agg: &Mutex<Aggregator>, state: &ListenerState) {
    let bind = || -> std::io::Result<Receiver> {
        let socket = bind_udp(addr, buffer)?;
        Ok(Box::new(move |buf: &mut [u8]| socket.recv(buf)))
    };
    let what = format!("udp {addr}");
    listen(
        &what,
        bind,
        || super::listener::holder(addr.port(), "udp"),
        &state.udp,
        agg,
    );
}

fn listen_unix(path: &std::path::Path, agg: &Mutex<Aggregator>, state: &ListenerState) {
    let bind = || -> std::io::Result<Receiver> {
        // A socket file left by an earlier run would make bind fail; one
        // that another process still reads from is left alone.
        let in_use =
            || std::os::unix::net::UnixDatagram::unbound().is_ok_and(|s| s.connect(path).is_ok());
        if std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            && !in_use()
        {
            let _ = std::fs::remove_file(path);
        }
        let socket = std::os::unix::net::UnixDatagram::bind(path)?;
        Ok(Box::new(move |buf: &mut [u8]| socket.recv(buf)))
    };
    let what = format!("unix {}", path.display());
    listen(&what, bind, || "unknown".into(), &state.unix, agg);
}

/// Most StatsD TCP connections open at once.
const MAX_TCP_CONNECTIONS: usize = 64;

/// A TCP connection silent this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(300);

fn listen_tcp(addr: SocketAddr, agg: &Arc<Mutex<Aggregator>>, state: &ListenerState) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut logged = false;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                info!(socket = %format!("tcp {addr}"), "StatsD listening");
                logged = false;
                state.tcp.store(true, Ordering::Relaxed);
                for stream in listener.incoming() {
                    let stream = match stream {
                        Ok(s) => s,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        // Out of descriptors, say: wait, then go on.
                        Err(e) => {
                            warn!(error = %e, "StatsD TCP accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    if open.load(Ordering::Relaxed) >= MAX_TCP_CONNECTIONS {
                        lock(agg).counts.tcp_refused += 1;
                        continue;
                    }
                    lock(agg).counts.tcp_connections += 1;
                    open.fetch_add(1, Ordering::Relaxed);
                    let (agg, held) = (Arc::clone(agg), Arc::clone(&open));
                    let spawned = std::thread::Builder::new()
                        .name("vigil-statsd-conn".into())
                        .stack_size(128 * 1024)
                        .spawn(move || {
                            read_tcp(stream, &agg);
                            held.fetch_sub(1, Ordering::Relaxed);
                        });
                    if spawned.is_err() {
                        open.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                state.tcp.store(false, Ordering::Relaxed);
            }
            Err(e) if !logged => {
                warn!(
                    socket = %format!("tcp {addr}"),
                    error = %e,
                    held_by = %super::listener::holder(addr.port(), "tcp"),
                    "StatsD cannot listen; trying again every 10 s (vigil_agent_listener_up is 0)"
                );
                logged = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(REBIND);
    }
}

/// Reads newline-separated lines from one connection until it closes,
/// folding whole lines in as they come; a line longer than a datagram is
/// skipped and counted (`too_long`).
fn read_tcp(mut stream: std::net::TcpStream, agg: &Mutex<Aggregator>) {
    use std::io::Read as _;
    let _ = stream.set_read_timeout(Some(TCP_IDLE));
    let mut buf = vec![0u8; DATAGRAM];
    let mut filled = 0;
    // Inside a line too long to keep: skip to its end.
    let mut skipping = false;
    loop {
        let n = match stream.read(buf.get_mut(filled..).unwrap_or_default()) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut start = 0;
        let end = filled + n;
        if skipping {
            match buf[filled..end].iter().position(|b| *b == b'\n') {
                Some(i) => {
                    start = filled + i + 1;
                    skipping = false;
                }
                None => {
                    filled = 0;
                    continue;
                }
            }
        }
        match buf[start..end].iter().rposition(|b| *b == b'\n') {
            Some(last) => {
                lock(agg).lines(&buf[start..start + last]);
                buf.copy_within(start + last + 1..end, 0);
                filled = end - (start + last + 1);
            }
            None if end - start == buf.len() => {
                let mut agg = lock(agg);
                agg.counts.lines += 1;
                agg.counts.invalid[Invalid::TooLong.index()] += 1;
                skipping = true;
                filled = 0;
            }
            None => {
                buf.copy_within(start..end, 0);
                filled = end - start;
            }
        }
    }
    // A last line without a newline.
    if filled > 0 && !skipping {
        lock(agg).lines(&buf[..filled]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg() -> Aggregator {
        Aggregator::new("", 100, 1_000)
    }

    fn value(a: &Aggregator, key_part: &str) -> Option<f64> {
        a.index
            .iter()
            .find(|(k, _)| k.contains(key_part))
            .and_then(|(_, i)| a.entries.get(*i))
            .map(|e| e.value)
    }

    #[test]
    fn counters_gauges_and_sets_fold() {
        let mut a = agg();
        a.datagram(
            b"hits:1|c\nhits:2|c|@0.5\ntemp:10|g\ntemp:+5|g\ntemp:-2|g\nu:a|s\nu:b|s\nu:a|s",
        );
        assert_eq!(value(&a, "hits_total"), Some(5.0));
        assert_eq!(value(&a, "temp"), Some(13.0));
        assert_eq!(value(&a, "su"), Some(2.0));
        assert_eq!(a.counts().lines, 8);
        a.flushed();
        assert_eq!(value(&a, "su"), Some(0.0));
        assert_eq!(value(&a, "hits_total"), Some(5.0));
    }

    #[test]
    fn tags_become_labels_and_reserved_ones_are_refused() {
        let mut a = agg();
        a.datagram(
            b"req:1|c|#route:/a,code:200,flag\nreq:1|c|#code:200,route:/a\nreq:1|c|#instance:other",
        );
        assert_eq!(a.series(), 1);
        let e = a.entries.first().map(|e| e.labels.clone());
        assert_eq!(
            e,
            Some(vec![
                ("code".to_string(), "200".to_string()),
                ("route".to_string(), "/a".to_string())
            ])
        );
        assert_eq!(a.counts().invalid[Invalid::ReservedTag.index()], 1);
    }

    #[test]
    fn the_agents_own_families_cannot_be_written() {
        let mut a = agg();
        a.datagram(b"node_load1:999|g\nvigil_agent_series:1|g\nprocess.cpu:1|c\nnodes:1|g");
        assert_eq!(a.counts().invalid[Invalid::ReservedName.index()], 3);
        assert_eq!(a.series(), 1);
        // A prefix makes the name the application's own.
        let mut a = Aggregator::new("app_", 100, 1_000);
        a.datagram(b"node_load1:999|g");
        assert_eq!(a.series(), 1);
    }

    #[test]
    fn limits_drop_and_count() {
        let mut a = Aggregator::new("", 2, 3);
        a.datagram(b"a:1|c\nb:1|c\nc:1|c");
        assert_eq!(a.series(), 2);
        assert_eq!(a.counts().dropped_series, 1);
        a.datagram(b"t:1:2:3:4|ms");
        // `t` is a third series: dropped too.
        assert_eq!(a.counts().dropped_series, 2);
        let mut a = Aggregator::new("", 10, 3);
        a.datagram(b"t:1:2:3:4|ms\nh:1|h|@0.5");
        assert_eq!(a.counts().dropped_window, 3);
        a.flushed();
        a.datagram(b"t:5|ms");
        assert_eq!(a.counts().dropped_window, 3);
    }

    #[test]
    fn tcp_lines_split_across_reads_and_too_long_lines_are_handled() -> anyhow::Result<()> {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let agg = Arc::new(Mutex::new(agg()));
        let reader = {
            let agg = Arc::clone(&agg);
            std::thread::spawn(move || -> std::io::Result<()> {
                let (stream, _) = listener.accept()?;
                read_tcp(stream, &agg);
                Ok(())
            })
        };
        let mut client = std::net::TcpStream::connect(addr)?;
        client.write_all(b"tcp.hits:1|c\ntcp.hi")?;
        client.flush()?;
        std::thread::sleep(Duration::from_millis(50));
        client.write_all(b"ts:2|c\n")?;
        // 100 KiB without a newline, then a good line.
        client.write_all(&vec![b'x'; 100 * 1024])?;
        client.write_all(b"\ntcp.hits:4|c\ntcp.hits:8|c")?;
        drop(client);
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        let a = lock(&agg);
        assert_eq!(value(&a, "tcp_hits_total"), Some(15.0));
        assert_eq!(a.counts().invalid[Invalid::TooLong.index()], 1);
        Ok(())
    }

    #[test]
    fn one_name_with_two_kinds_is_refused() {
        let mut a = agg();
        a.datagram(b"x:1|g\nx:1|s\nx:1|h\ny:1|ms\ny:1|h\nz:1|h\nz:2|d");
        assert_eq!(a.counts().invalid[Invalid::TypeConflict.index()], 2);
        // x (gauge), y_seconds, y, z (histogram and distribution together).
        assert_eq!(a.series(), 4);
    }
}

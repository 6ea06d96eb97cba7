//! The end-to-end harness: starts the real `vigil-collector` and `vigil-agent`
//! binaries (and real peers such as `promtool`) on free ports of 127.0.0.1,
//! each in its own temporary folder, waits for them by polling with a
//! deadline, and kills every process it started when dropped.
//!
//! The binaries come from the same build as the tests: run
//! `cargo build --workspace --bins` first (the README's test command does).

pub mod proxy;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use vigil_shared::text_format::{self, TextFamily};

/// Where the workspace's binaries are: beside the test executable's `deps/` folder.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("no current executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build the binaries first with `cargo build --workspace --bins` (the README's test command does)",
            path.display()
        );
    }
    Ok(path)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process the harness started; killed when dropped. Its standard error
/// (where the binaries log) goes to a file in its folder.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args`, logging to `dir/name.log`.
    pub fn start(name: &str, binary: &Path, args: &[&str], dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self {
            name: name.into(),
            child,
            log,
        })
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("{:?} in the log of {}", needle, self.name),
            timeout,
            || self.log().contains(needle).then_some(()),
        )
        .with_context(|| format!("log of {}:\n{}", self.name, self.log()))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let child = &mut self.child;
        wait_for(&format!("{} to exit", self.name), timeout, || {
            child.try_wait().ok().flatten()
        })
    }

    /// Sends SIGKILL and waits for the process to end.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running collector.
pub struct Collector {
    /// The process.
    pub process: Process,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its gRPC ingest address.
    pub ingest: SocketAddr,
}

impl Collector {
    /// Starts a collector on the given ports with extra TOML appended to
    /// `[ingest]`, its data in `dir/NAME-data`, and waits until `/-/ready`
    /// answers. Starting again with the same `dir` and `name` restarts it on
    /// the same data.
    pub fn start(
        dir: &Path,
        name: &str,
        http_port: u16,
        ingest_port: u16,
        ingest_extra: &str,
        rest: &str,
    ) -> Result<Self> {
        Self::start_with_store(dir, name, http_port, ingest_port, ingest_extra, rest, "")
    }

    /// As [`Collector::start`] with defaults but for extra TOML in `[store]`.
    pub fn start_store(
        dir: &Path,
        name: &str,
        http_port: u16,
        ingest_port: u16,
        store_extra: &str,
    ) -> Result<Self> {
        Self::start_with_store(dir, name, http_port, ingest_port, "", "", store_extra)
    }

    /// As [`Collector::start`], with extra TOML in `[store]`.
    pub fn start_with_store(
        dir: &Path,
        name: &str,
        http_port: u16,
        ingest_port: u16,
        ingest_extra: &str,
        rest: &str,
        store_extra: &str,
    ) -> Result<Self> {
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest_port}\"\n{ingest_extra}\n{rest}\n[store]\ndata_dir = \"{}\"\n{store_extra}\n",
            dir.join(format!("{name}-data")).display()
        );
        Self::launch(dir, name, http_port, ingest_port, &text)
    }

    /// Starts a collector named `collector` on free ports with extra TOML
    /// in `[http]` (an admin token, say) and `rest` after `[ingest]`.
    pub fn start_with_http(dir: &Path, http_extra: &str, rest: &str) -> Result<Self> {
        let (http_port, ingest_port) = (free_port()?, free_port()?);
        let text = format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\n{http_extra}\n[ingest]\nlisten = \"127.0.0.1:{ingest_port}\"\n{rest}\n[store]\ndata_dir = \"{}\"\n",
            dir.join("collector-data").display()
        );
        Self::launch(dir, "collector", http_port, ingest_port, &text)
    }

    /// Writes `dir/NAME.toml`, starts the workspace's collector on it and
    /// waits until `/-/ready` answers.
    pub fn launch(
        dir: &Path,
        name: &str,
        http_port: u16,
        ingest_port: u16,
        text: &str,
    ) -> Result<Self> {
        Self::launch_binary(
            &binary("vigil-collector")?,
            dir,
            name,
            http_port,
            ingest_port,
            text,
        )
    }

    /// Starts the collector binary at `program` (an installed one, say)
    /// with the config `text` written to `dir/NAME.toml`, and waits until
    /// `/-/ready` answers.
    pub fn launch_binary(
        program: &Path,
        dir: &Path,
        name: &str,
        http_port: u16,
        ingest_port: u16,
        text: &str,
    ) -> Result<Self> {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, text)?;
        let process = Process::start(name, program, &["--config", &config.to_string_lossy()], dir)?;
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let ingest: SocketAddr = ([127, 0, 0, 1], ingest_port).into();
        wait_until_ok(http, "/-/ready", &process)?;
        Ok(Self {
            process,
            http,
            ingest,
        })
    }

    /// Starts a collector on free ports with default settings.
    pub fn start_default(dir: &Path) -> Result<Self> {
        Self::start_with(dir, "")
    }

    /// Starts a collector named `collector` on free ports with `rest`
    /// appended to its config (sections after `[ingest]`).
    pub fn start_with(dir: &Path, rest: &str) -> Result<Self> {
        Self::start(dir, "collector", free_port()?, free_port()?, "", rest)
    }

    /// Scrapes `/metrics` in the text format and parses it.
    pub fn scrape(&self) -> Result<Scrape> {
        let (status, _, body) = http_get(self.http, "/metrics", None)?;
        if status != 200 {
            bail!("/metrics answered {status}: {body}");
        }
        Scrape::parse(body)
    }
}

/// Percent-encodes a query-string value.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Collector {
    /// Runs a PromQL instant query through `/api/v1/query` at `time` (Unix seconds).
    pub fn query(&self, query: &str, time: f64) -> Result<serde_json::Value> {
        let path = format!("/api/v1/query?query={}&time={time}", url_encode(query));
        let (status, _, body) = http_get(self.http, &path, None)?;
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("not JSON: {body}"))?;
        if status != 200 {
            bail!("{query}: HTTP {status}: {body}");
        }
        Ok(json)
    }
}

/// Starts an agent whose config is `config` (TOML), written to `dir/name.toml`.
pub fn start_agent(dir: &Path, name: &str, config: &str) -> Result<Process> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config)?;
    // Each agent its own spool, unless the config names one (to restart an
    // agent on its spool under another name).
    let data = dir.join(format!("{name}-data"));
    let data = data.to_string_lossy();
    let mut args = vec!["--config", path.to_str().unwrap_or_default()];
    if !config.contains("data_dir") {
        args.extend(["--data-dir", &data]);
    }
    Process::start(name, &binary("vigil-agent")?, &args, dir)
}

/// One parsed scrape.
pub struct Scrape {
    /// The raw text.
    pub text: String,
    /// The families, by name.
    pub families: BTreeMap<String, TextFamily>,
}

impl Scrape {
    /// Parses an exposition with Vigil's strict text-format parser.
    pub fn parse(text: String) -> Result<Self> {
        let families = text_format::parse(&text)
            .map_err(|e| anyhow!("exposition does not parse: {e}"))?
            .into_iter()
            .map(|f| (f.name.clone(), f))
            .collect();
        Ok(Self { text, families })
    }

    /// Every sample named `name` whose labels include all of `labels`.
    pub fn samples(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Vec<(BTreeMap<String, String>, f64)> {
        self.families
            .values()
            .flat_map(|f| f.samples.iter())
            .filter(|s| s.name == name)
            .map(|s| {
                (
                    s.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                    s.value,
                )
            })
            .filter(|(l, _)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one value of `name` with `labels`, if exactly one sample matches.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let s = self.samples(name, labels);
        (s.len() == 1).then(|| s[0].1)
    }
}

/// A minimal HTTP/1.1 GET: status, content type and body.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> Result<(u16, String, String)> {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
    http_request(addr, "GET", path, &headers)
}

/// A minimal HTTP/1.1 request without a body: status, content type and body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP header end"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head}"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, content_type, body))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or_else(|| anyhow!("short chunk"))?);
        body = rest.get(size + 2..).ok_or_else(|| anyhow!("short chunk"))?;
    }
}

/// A file or folder of `testdata/compat/` (third-party files: rule files,
/// dashboards, conformance tests), which `scripts/fetch-compat.sh` fills;
/// a missing one fails the test with that command.
pub fn compat_path(relative: &str) -> Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/compat")
        .join(relative);
    if path.exists() {
        Ok(path)
    } else {
        Err(anyhow!(
            "{} is missing: run scripts/fetch-compat.sh (the README's test command runs it first)",
            path.display()
        ))
    }
}

/// Finds a program on PATH or says how to install it: a missing peer fails the test.
pub fn require_peer(program: &str, debian_package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!("{program} is not installed: install Debian's {debian_package} package (apt-get install {debian_package}); .ci/run does")
        })
}

/// Runs `promtool check metrics` on an exposition; returns its problem lines.
pub fn promtool_check_metrics(exposition: &str) -> Result<(i32, Vec<String>)> {
    let promtool = require_peer("promtool", "prometheus")?;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(exposition.as_bytes())?;
    let out = child.wait_with_output()?;
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .map(str::to_string)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines.sort();
    Ok((out.status.code().unwrap_or(-1), lines))
}

/// Number of CPUs the kernel lists in /proc/stat.
pub fn cpu_count() -> Result<usize> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    Ok(stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count())
}

/// One request a [`WebhookReceiver`] got.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// When it arrived.
    pub at: std::time::Instant,
    /// Header names in lower case, with their values.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
    /// The status it was answered with.
    pub status: u16,
}

/// A local HTTP receiver for webhooks: records every request and answers
/// with the status `answer` gives for it (the request's number, from 0).
pub struct WebhookReceiver {
    /// Its address.
    pub addr: SocketAddr,
    requests: std::sync::Arc<std::sync::Mutex<Vec<ReceivedRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl WebhookReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub fn start(answer: impl Fn(usize) -> u16 + Send + 'static) -> Result<Self> {
        Self::start_on(0, answer)
    }

    /// Starts a receiver on a given port (0: any).
    pub fn start_on(port: u16, answer: impl Fn(usize) -> u16 + Send + 'static) -> Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve_one(stream, &seen, &answer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            addr,
            requests,
            stop,
        })
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn serve_one(
    mut stream: TcpStream,
    seen: &std::sync::Mutex<Vec<ReceivedRequest>>,
    answer: &dyn Fn(usize) -> u16,
) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let (head_end, length) = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..pos]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0usize);
            break (pos + 4, length);
        }
    };
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = String::from_utf8_lossy(&raw[head_end..]).to_string();
    let status = {
        let mut seen = seen.lock().map_err(|_| anyhow!("receiver lock poisoned"))?;
        let status = answer(seen.len());
        seen.push(ReceivedRequest {
            at: std::time::Instant::now(),
            headers,
            body,
            status,
        });
        status
    };
    write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )?;
    Ok(())
}

/// A minimal HTTP/1.1 POST with a JSON body: status and body.
pub fn http_post_json(addr: SocketAddr, path: &str, body: &str) -> Result<(u16, String)> {
    http_post(addr, path, &[("Content-Type", "application/json")], body)
}

/// A minimal HTTP/1.1 POST with these headers and body: status and body.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let (status, body) = http_post_bytes(addr, path, headers, body.as_bytes())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A minimal HTTP/1.1 POST of a binary body: status and body bytes.
pub fn http_post_bytes(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    // The server may answer (413) and close before the whole body is read.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = String::from_utf8_lossy(out.get(..split).unwrap_or_default()).into_owned();
    let body = out.get(split + 4..).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("no status in the answer"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&String::from_utf8_lossy(body))?.into_bytes()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let openssl = require_peer("openssl", "openssl")?;
    let out = Command::new(openssl).current_dir(dir).args(args).output()?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
pub fn make_certificates(dir: &Path) -> Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Vigil test CA",
        ],
    )?;
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext)?;
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ],
        )?;
    }
    // rustls wants PKCS#8 keys.
    for name in ["server", "client"] {
        openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pk8"),
            ],
        )?;
    }
    Ok(())
}

/// Debian's Prometheus server (2.42), started by a test.
pub struct Prometheus {
    /// The process.
    pub process: Process,
    /// Its HTTP address.
    pub http: SocketAddr,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (YAML, written to
    /// `dir/NAME.yml`), its TSDB in `dir/NAME-tsdb`, on a free port, and
    /// waits until `/-/ready` answers. A missing `prometheus` fails the
    /// test and says how to install it.
    pub fn start(dir: &Path, name: &str, config: &str) -> Result<Self> {
        Self::start_with(dir, name, config, &[])
    }

    /// [`Prometheus::start`] with extra command-line flags.
    pub fn start_with(dir: &Path, name: &str, config: &str, extra: &[&str]) -> Result<Self> {
        let program = require_peer("prometheus", "prometheus")?;
        let port = free_port()?;
        let path = dir.join(format!("{name}.yml"));
        std::fs::write(&path, config)?;
        let process = Process::start(
            name,
            &program,
            &[
                &format!("--config.file={}", path.display()),
                &format!(
                    "--storage.tsdb.path={}",
                    dir.join(format!("{name}-tsdb")).display()
                ),
                &format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn",
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<&str>>(),
            dir,
        )?;
        let http: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until_ok(http, "/-/ready", &process)?;
        Ok(Self { process, http })
    }
}

/// One series from VictoriaMetrics's `/api/v1/export`: its labels (JSON)
/// and raw samples `(ms, value)`.
pub type ExportedSeries = (serde_json::Value, Vec<(i64, f64)>);

/// Waits up to 30 s until `GET path` on `http` answers 200; the error
/// carries `process`'s log.
fn wait_until_ok(http: SocketAddr, path: &str, process: &Process) -> Result<()> {
    wait_for(
        &format!("{} to answer {path}", process.name),
        Duration::from_secs(30),
        || {
            http_get(http, path, None)
                .ok()
                .filter(|(s, _, _)| *s == 200)
        },
    )
    .with_context(|| format!("log of {}:\n{}", process.name, process.log()))?;
    Ok(())
}

/// Starts Debian's Alertmanager with `config` (written to `dir/am.yml`),
/// without clustering, and waits until it is ready: the process and its
/// address.
pub fn start_alertmanager(dir: &Path, config: &str) -> Result<(Process, SocketAddr)> {
    let alertmanager = require_peer("prometheus-alertmanager", "prometheus-alertmanager")?;
    std::fs::write(dir.join("am.yml"), config)?;
    let port = free_port()?;
    let process = Process::start(
        "alertmanager",
        &alertmanager,
        &[
            &format!("--config.file={}", dir.join("am.yml").display()),
            &format!("--storage.path={}", dir.join("am-data").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=",
        ],
        dir,
    )?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_until_ok(addr, "/-/ready", &process)?;
    Ok((process, addr))
}

/// A running VictoriaMetrics single-node server (Debian's
/// `victoria-metrics`), its data in `dir/NAME-data`; killed when dropped.
pub struct VictoriaMetrics {
    /// The process.
    pub process: Process,
    /// Its HTTP address.
    pub http: SocketAddr,
}

impl VictoriaMetrics {
    /// Starts it on `port` (0: a free one) with samples visible at once
    /// (`-search.latencyOffset=0s`) and no deduplication, and waits until
    /// it answers. Starting again with the same `dir` and `name` reopens
    /// its data.
    pub fn start(dir: &Path, name: &str, port: u16) -> Result<Self> {
        let program = require_peer("victoria-metrics", "victoria-metrics")?;
        let port = if port == 0 { free_port()? } else { port };
        let process = Process::start(
            name,
            &program,
            &[
                &format!("-httpListenAddr=127.0.0.1:{port}"),
                &format!(
                    "-storageDataPath={}",
                    dir.join(format!("{name}-data")).display()
                ),
                "-search.latencyOffset=0s",
                "-retentionPeriod=100y",
                "-loggerLevel=WARN",
            ],
            dir,
        )?;
        let http: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until_ok(http, "/health", &process)?;
        Ok(Self { process, http })
    }

    /// Every raw sample of the series `selector` selects, from
    /// `/api/v1/export`: (labels without `__name__`… as JSON, samples).
    pub fn export(&self, selector: &str) -> Result<Vec<ExportedSeries>> {
        let (status, _, body) = http_get(
            self.http,
            &format!("/api/v1/export?match[]={}", url_encode(selector)),
            None,
        )?;
        ensure!(status == 200, "export {selector}: {status} {body}");
        let mut out = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let times = v["timestamps"].as_array().context("no timestamps")?;
            let values = v["values"].as_array().context("no values")?;
            let samples = times
                .iter()
                .zip(values)
                .map(|(t, v)| {
                    let value = v
                        .as_f64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()));
                    (t.as_i64().unwrap_or(0), value.unwrap_or(f64::NAN))
                })
                .collect();
            out.push((v["metric"].clone(), samples));
        }
        Ok(out)
    }
}

/// GETs `path` and parses the answer as JSON: status and document.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<(u16, serde_json::Value)> {
    let (status, _, body) = http_get(addr, path, None)?;
    let json = serde_json::from_str(&body)
        .with_context(|| format!("GET {path} on {addr}: not JSON ({status}): {body}"))?;
    Ok((status, json))
}

/// POSTs a form body to `path` and parses the answer as JSON.
pub fn post_form_json(
    addr: SocketAddr,
    path: &str,
    form: &str,
) -> Result<(u16, serde_json::Value)> {
    let (status, body) = http_post(
        addr,
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form,
    )?;
    let json = serde_json::from_str(&body)
        .with_context(|| format!("POST {path} on {addr}: not JSON ({status}): {body}"))?;
    Ok((status, json))
}

/// Posts `expr` to `/api/v1/query_range` as Grafana does, over the last
/// `seconds` at a 5 s step: status and document.
pub fn query_range_recent(
    addr: SocketAddr,
    expr: &str,
    seconds: f64,
) -> Result<(u16, serde_json::Value)> {
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64()
        .floor();
    let form = format!(
        "query={}&start={}&end={end}&step=5",
        url_encode(expr),
        end - seconds
    );
    post_form_json(addr, "/api/v1/query_range", &form)
}

/// Seconds since the Unix epoch, with fractions.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The value of `query` at the collector now, if it has exactly one element.
pub fn query_value(collector: &Collector, query: &str) -> Option<f64> {
    let answer = collector.query(query, unix_now()).ok()?;
    let result = answer["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// Waits up to 30 s until `query` gives `want` (within 1e-9) at the collector.
pub fn expect_value(collector: &Collector, query: &str, want: f64) -> Result<()> {
    let seen = wait_for(query, Duration::from_secs(30), || {
        query_value(collector, query).filter(|v| (v - want).abs() < 1e-9)
    });
    if seen.is_err() {
        bail!(
            "{query}: wanted {want}, the collector has {:?}",
            query_value(collector, query)
        );
    }
    Ok(())
}

/// CPU time of every thread of process `pid`, in nanoseconds, from the
/// scheduler (`/proc/PID/task/*/schedstat`); 0 when it is gone.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

/// Resident memory of process `pid` in KiB (`VmRSS`); 0 when it is gone.
pub fn process_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

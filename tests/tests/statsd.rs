//! StatsD end to end: datagrams of every type sent over UDP to a real agent,
//! by hand and by Python's `statsd` client, arrive at the collector exactly;
//! malformed lines are counted per reason; a port held by another process
//! leaves the agent sampling and shipping with the listener shown down; a
//! flood of new series stops at the limit without touching the system's; a
//! collector outage loses and doubles no StatsD or OTLP count.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_tests::{Collector, get_json, start_agent, wait_for};
use vigil_tests::{expect_value as expect, query_value as value};

fn agent_config(collector: &Collector, instance: &str, statsd: &str) -> String {
    format!(
        "instance = \"{instance}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\n[sources.statsd]\n{statsd}\n",
        collector.ingest
    )
}

fn free_udp_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn send(socket: &UdpSocket, port: u16, datagram: &str) -> Result<()> {
    socket.send_to(datagram.as_bytes(), ("127.0.0.1", port))?;
    Ok(())
}

/// A collector, and an agent whose StatsD server listens on a free port
/// (with `extra` in `[sources.statsd]`), once it listens.
struct Setup {
    _dir: tempfile::TempDir,
    collector: Collector,
    agent: vigil_tests::Process,
    port: u16,
    socket: UdpSocket,
}

fn setup(instance: &str, extra: &str) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let port = free_udp_port()?;
    let agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(
            &collector,
            instance,
            &format!("udp = \"127.0.0.1:{port}\"\n{extra}"),
        ),
    )?;
    agent.wait_for_log("StatsD listening", Duration::from_secs(20))?;
    Ok(Setup {
        _dir: dir,
        collector,
        agent,
        port,
        socket: UdpSocket::bind("127.0.0.1:0")?,
    })
}

#[test]
fn every_statsd_type_arrives_exactly_and_bad_lines_are_counted_by_reason() -> Result<()> {
    let Setup {
        collector,
        agent: _agent,
        port,
        socket: s,
        _dir: _kept,
    } = setup("statsd-e2e", "")?;
    for _ in 0..10 {
        send(&s, port, "e2e.hits:1|c")?;
    }
    // Sampled at one half: counts 2 / 0.5 = 4.
    send(&s, port, "e2e.hits:2|c|@0.5")?;
    send(&s, port, "e2e.temp:10|g\ne2e.temp:+5|g\ne2e.temp:-2|g")?;
    send(&s, port, "e2e.lat:100|ms\ne2e.lat:200|ms\ne2e.lat:300|ms")?;
    send(&s, port, "e2e.size:1:2:3:4|h\ne2e.size:10|d")?;
    send(&s, port, "e2e.users:a|s\ne2e.users:b|s\ne2e.users:a|s")?;
    for _ in 0..3 {
        send(&s, port, "e2e.req:1|c|#route:/a,code:200|c:abc|T1700000000")?;
    }
    send(
        &s,
        port,
        "e2e.bad:abc|c\ne2e.bad:1|q\nnocolon\ne2e.neg:-1|c\ne2e.x:1|c|#instance:evil\n_e{1,1}:a|b\ne2e.bad:1|c|@2\nnode_load1:999|g",
    )?;

    let me = "{instance=\"statsd-e2e\"}";
    expect(&collector, &format!("e2e_hits_total{me}"), 14.0)?;
    expect(&collector, &format!("e2e_temp{me}"), 13.0)?;
    expect(
        &collector,
        "e2e_req_total{instance=\"statsd-e2e\",route=\"/a\",code=\"200\"}",
        3.0,
    )?;
    expect(&collector, &format!("e2e_lat_seconds_count{me}"), 3.0)?;
    expect(&collector, &format!("e2e_lat_seconds_sum{me}"), 0.6)?;
    expect(&collector, &format!("e2e_size_count{me}"), 5.0)?;
    expect(&collector, &format!("e2e_size_sum{me}"), 20.0)?;
    expect(
        &collector,
        &format!("max_over_time(e2e_users{me}[1m])"),
        2.0,
    )?;
    // The exact median of the timer's three samples.
    let (status, q) = get_json(
        collector.http,
        &format!(
            "/api/v1/vigil/quantile?query={}&q=0.5",
            vigil_tests::url_encode("e2e_lat_seconds{instance=\"statsd-e2e\"}")
        ),
    )?;
    ensure!(status == 200, "quantile: HTTP {status}: {q}");
    ensure!(q["data"]["count"] == 3, "quantile count: {q}");
    // HDR windows keep 3 significant digits: within 0.1 %.
    let median: f64 = q["data"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .context("quantile value")?;
    ensure!((median - 0.2).abs() <= 0.2e-3, "quantile value: {q}");
    for (reason, want) in [
        ("bad_value", 1.0),
        ("bad_type", 1.0),
        ("no_value", 1.0),
        ("negative_counter", 1.0),
        ("reserved_tag", 1.0),
        ("unsupported", 1.0),
        ("bad_rate", 1.0),
        ("reserved_name", 1.0),
        ("no_type", 0.0),
    ] {
        expect(
            &collector,
            &format!(
                "vigil_agent_statsd_invalid_lines_total{{instance=\"statsd-e2e\",reason=\"{reason}\"}}"
            ),
            want,
        )?;
    }
    // The host's own load was not overwritten.
    ensure!(
        value(&collector, "node_load1{instance=\"statsd-e2e\"}").is_some_and(|v| v != 999.0),
        "a StatsD line overwrote node_load1"
    );
    // Nothing claimed another instance.
    ensure!(
        value(&collector, "e2e_x_total").is_none(),
        "a line tagged instance:evil was kept"
    );
    expect(
        &collector,
        "vigil_agent_statsd_lines_total{instance=\"statsd-e2e\"}",
        33.0,
    )?;
    Ok(())
}

#[test]
fn python_statsd_client_arrives() -> Result<()> {
    let python = vigil_tests::require_peer("python3", "python3")?;
    let check = Command::new(&python)
        .args(["-c", "import statsd"])
        .output()?;
    ensure!(
        check.status.success(),
        "Python's statsd client is missing: pip install statsd (.ci/run installs it)"
    );
    // Every part is bound: a part left to `..` would be dropped (and the
    // agent stopped) at once.
    let Setup {
        collector,
        agent: _agent,
        port,
        socket: _,
        _dir: _kept,
    } = setup("statsd-py", "")?;
    let script = format!(
        "import statsd\n\
         c = statsd.StatsClient('127.0.0.1', {port}, prefix='shop')\n\
         for _ in range(5): c.incr('orders')\n\
         c.incr('orders', 3)\n\
         c.gauge('queue', 42)\n\
         c.gauge('queue', -2, delta=True)\n\
         c.timing('checkout', 250)\n\
         c.timing('checkout', 750)\n\
         c.set('visitors', 'a')\n"
    );
    let out = Command::new(&python).args(["-c", &script]).output()?;
    ensure!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me = "{instance=\"statsd-py\"}";
    expect(&collector, &format!("shop_orders_total{me}"), 8.0)?;
    expect(&collector, &format!("shop_queue{me}"), 40.0)?;
    expect(&collector, &format!("shop_checkout_seconds_count{me}"), 2.0)?;
    expect(&collector, &format!("shop_checkout_seconds_sum{me}"), 1.0)?;
    Ok(())
}

#[test]
fn a_taken_port_leaves_the_agent_shipping_and_the_listener_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let holder = UdpSocket::bind("127.0.0.1:0")?;
    let port = holder.local_addr()?.port();
    let agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(
            &collector,
            "statsd-taken",
            &format!("udp = \"127.0.0.1:{port}\""),
        ),
    )?;
    agent.wait_for_log("StatsD cannot listen", Duration::from_secs(20))?;
    let log = agent.log();
    let me = std::fs::read_to_string("/proc/self/comm")?;
    ensure!(
        log.contains(&format!("pid {}", std::process::id())) && log.contains(me.trim()),
        "the log does not name the process holding the port: {log}"
    );
    expect(
        &collector,
        "vigil_agent_listener_up{instance=\"statsd-taken\",listener=\"statsd_udp\"}",
        0.0,
    )?;
    // The system source still ships.
    wait_for("node_load1", Duration::from_secs(30), || {
        value(&collector, "node_load1{instance=\"statsd-taken\"}")
    })?;
    // Freed, the port is taken within the 10 s retry.
    drop(holder);
    expect(
        &collector,
        "vigil_agent_listener_up{instance=\"statsd-taken\",listener=\"statsd_udp\"}",
        1.0,
    )?;
    let s = UdpSocket::bind("127.0.0.1:0")?;
    send(&s, port, "late.hits:1|c")?;
    expect(
        &collector,
        "late_hits_total{instance=\"statsd-taken\"}",
        1.0,
    )?;
    Ok(())
}

#[test]
fn a_flood_of_new_series_stops_at_the_limit_and_spares_the_system_series() -> Result<()> {
    let Setup {
        collector,
        agent,
        port,
        socket: s,
        _dir: _kept,
    } = setup("statsd-flood", "max_series = 500")?;
    // 2,000 new series, 20 lines a datagram.
    for chunk in 0..100 {
        let lines: Vec<String> = (0..20)
            .map(|i| format!("flood.s{}:1|c", chunk * 20 + i))
            .collect();
        send(&s, port, &lines.join("\n"))?;
    }
    expect(
        &collector,
        "vigil_agent_statsd_series{instance=\"statsd-flood\"}",
        500.0,
    )?;
    expect(
        &collector,
        "vigil_agent_statsd_dropped_total{instance=\"statsd-flood\",reason=\"max_series\"}",
        1500.0,
    )?;
    expect(
        &collector,
        "count({instance=\"statsd-flood\",__name__=~\"flood_.*\"})",
        500.0,
    )?;
    value(&collector, "node_load1{instance=\"statsd-flood\"}")
        .context("the system's series are missing after the flood")?;
    ensure!(
        agent.log().matches("max_series reached").count() <= 1_000,
        "refused names are logged more than once each"
    );
    Ok(())
}

#[test]
fn a_collector_outage_of_30_seconds_loses_and_doubles_no_statsd_or_otlp_count() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (http_port, ingest_port) = (vigil_tests::free_port()?, vigil_tests::free_port()?);
    let grpc = vigil_tests::free_port()?;
    let collector = Collector::start(dir.path(), "collector", http_port, ingest_port, "", "")?;
    let port = free_udp_port()?;
    let agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"statsd-outage\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
             [collector]\nendpoint = \"http://127.0.0.1:{ingest_port}\"\ntimeout = \"1s\"\n\
             [shipper]\nretry_initial = \"100ms\"\nretry_max = \"1s\"\n\
             [sources.statsd]\nudp = \"127.0.0.1:{port}\"\n\
             [sources.otlp]\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"\"\n"
        ),
    )?;
    agent.wait_for_log("StatsD listening", Duration::from_secs(20))?;
    agent.wait_for_log("OTLP listening", Duration::from_secs(20))?;
    // An application on OpenTelemetry's SDK exports once a second for 40 s
    // (cumulative), while StatsD lines keep coming.
    let app = std::process::Command::new(vigil_tests::binary("vigil-otlp-app")?)
        .args([
            "grpc",
            &format!("http://127.0.0.1:{grpc}"),
            "outage",
            "cumulative",
            "40",
        ])
        .env("PAUSE_MS", "1000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let s = UdpSocket::bind("127.0.0.1:0")?;
    let mut sent = 0u32;
    // 20 lines a second: 5 s up, 30 s down, 5 s up again.
    let mut send_for = |seconds: u32| -> Result<()> {
        for _ in 0..seconds * 10 {
            send(
                &s,
                port,
                &format!("outage.hits:1|c\noutage.lat:{}|ms", sent % 50),
            )?;
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };
    send_for(5)?;
    drop(collector);
    send_for(30)?;
    let collector = Collector::start(dir.path(), "collector", http_port, ingest_port, "", "")?;
    send_for(5)?;
    ensure!(sent == 400, "sent {sent}");
    let total = f64::from(sent);
    let me = "{instance=\"statsd-outage\"}";
    expect(&collector, &format!("outage_hits_total{me}"), total)?;
    expect(&collector, &format!("outage_lat_seconds_count{me}"), total)?;
    // Each of the 50 values 0..49 ms was sent 8 times: 8 × 1.225 s.
    let sum = value(&collector, &format!("outage_lat_seconds_sum{me}")).context("sum")?;
    ensure!((sum - 9.8).abs() < 1e-6, "timer sum {sum}, wanted 9.8");
    let out = app.wait_with_output()?;
    ensure!(
        out.status.success(),
        "vigil-otlp-app: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 40 rounds: 3 requests on /a, 100 payloads (sum 50,500) each.
    let app = "{instance=\"statsd-outage\",job=\"outage\"}";
    let a = "{instance=\"statsd-outage\",job=\"outage\",route=\"/a\"}";
    expect(&collector, &format!("app_requests_total{a}"), 120.0)?;
    expect(
        &collector,
        &format!("app_latency_seconds_count{app}"),
        160.0,
    )?;
    expect(
        &collector,
        &format!("app_payload_bytes_count{app}"),
        4_000.0,
    )?;
    expect(
        &collector,
        &format!("app_payload_bytes_sum{app}"),
        2_020_000.0,
    )?;
    Ok(())
}

/// A collector, and an agent whose StatsD server listens on `path` only.
fn unix_only(
    dir: &std::path::Path,
    instance: &str,
    path: &std::path::Path,
) -> Result<(Collector, vigil_tests::Process)> {
    let collector = Collector::start_default(dir)?;
    let agent = start_agent(
        dir,
        "agent",
        &agent_config(
            &collector,
            instance,
            &format!("udp = \"\"\nunix = \"{}\"", path.display()),
        ),
    )?;
    Ok((collector, agent))
}

#[test]
fn a_unix_datagram_socket_takes_statsd_and_replaces_a_stale_socket_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("statsd.sock");
    // A socket file left by an earlier run: nobody reads from it.
    drop(std::os::unix::net::UnixDatagram::bind(&path)?);
    ensure!(path.exists(), "the stale socket file was not left");
    let (collector, agent) = unix_only(dir.path(), "statsd-unix", &path)?;
    agent.wait_for_log("StatsD listening", Duration::from_secs(20))?;
    let client = std::os::unix::net::UnixDatagram::unbound()?;
    client.send_to(b"unix.hits:2|c\nunix.hits:3|c", &path)?;
    expect(&collector, "unix_hits_total{instance=\"statsd-unix\"}", 5.0)?;
    expect(
        &collector,
        "vigil_agent_listener_up{instance=\"statsd-unix\",listener=\"statsd_unix\"}",
        1.0,
    )?;
    // UDP is off: no UDP listener is shown.
    ensure!(
        value(
            &collector,
            "vigil_agent_listener_up{instance=\"statsd-unix\",listener=\"statsd_udp\"}"
        )
        .is_none(),
        "a UDP listener is shown although udp = \"\""
    );
    Ok(())
}

#[test]
fn a_unix_socket_another_process_reads_is_left_alone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("statsd.sock");
    let other = std::os::unix::net::UnixDatagram::bind(&path)?;
    let (collector, agent) = unix_only(dir.path(), "statsd-unix-taken", &path)?;
    agent.wait_for_log("StatsD cannot listen", Duration::from_secs(20))?;
    // The other process still gets what is sent to its socket.
    std::os::unix::net::UnixDatagram::unbound()?.send_to(b"still:1|c", &path)?;
    other.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 64];
    let n = other.recv(&mut buf)?;
    ensure!(
        &buf[..n] == b"still:1|c",
        "the other process lost its socket"
    );
    expect(
        &collector,
        "vigil_agent_listener_up{instance=\"statsd-unix-taken\",listener=\"statsd_unix\"}",
        0.0,
    )?;
    Ok(())
}

#[test]
fn statsd_over_tcp_takes_newline_separated_lines() -> Result<()> {
    use std::io::Write as _;
    let tcp = vigil_tests::free_port()?;
    let Setup {
        collector,
        agent,
        port: _,
        socket: _,
        _dir: _kept,
    } = setup("statsd-tcp", &format!("tcp = \"127.0.0.1:{tcp}\""))?;
    wait_for("the TCP listener", Duration::from_secs(20), || {
        agent
            .log()
            .contains(&format!("tcp 127.0.0.1:{tcp}"))
            .then_some(())
    })?;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", tcp))?;
    // One line split over two writes, then one without a final newline.
    stream.write_all(b"tcp.hits:2|c\ntcp.lat:250|ms\ntcp.hi")?;
    stream.flush()?;
    std::thread::sleep(Duration::from_millis(100));
    stream.write_all(b"ts:3|c\ntcp.hits:5|c")?;
    drop(stream);
    let me = "{instance=\"statsd-tcp\"}";
    expect(&collector, &format!("tcp_hits_total{me}"), 10.0)?;
    expect(&collector, &format!("tcp_lat_seconds_sum{me}"), 0.25)?;
    expect(
        &collector,
        "vigil_agent_listener_up{instance=\"statsd-tcp\",listener=\"statsd_tcp\"}",
        1.0,
    )?;
    expect(
        &collector,
        "vigil_agent_statsd_tcp_connections_total{instance=\"statsd-tcp\",outcome=\"accepted\"}",
        1.0,
    )?;
    Ok(())
}

//! OTLP end to end: an application on OpenTelemetry's own Rust SDK and
//! exporter (`vigil-otlp-app`) exports a counter, an up-down counter, a
//! gauge, a histogram and an exponential histogram to a real agent over
//! gRPC, HTTP/protobuf and HTTP/JSON; the collector's values are what the
//! application recorded. Hand-written requests over limits get OTLP's
//! partial success, malformed or oversized ones a clear refusal; ports held
//! by other sockets leave the agent shipping with those listeners down.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_tests::{Collector, binary, free_port, get_json, http_post_bytes, start_agent, wait_for};
use vigil_tests::{expect_value as expect, query_value as value};

/// An agent config with StatsD off and OTLP on these addresses.
fn agent_config(collector: &Collector, instance: &str, otlp: &str) -> String {
    format!(
        "instance = \"{instance}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
         [collector]\nendpoint = \"http://{}\"\n[sources.statsd]\nudp = \"\"\n[sources.otlp]\n{otlp}\n",
        collector.ingest
    )
}

/// Runs the SDK application to the end.
fn run_app(
    protocol: &str,
    endpoint: &str,
    service: &str,
    temporality: &str,
    rounds: u32,
) -> Result<()> {
    let out = Command::new(binary("vigil-otlp-app")?)
        .args([
            protocol,
            endpoint,
            service,
            temporality,
            &rounds.to_string(),
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "vigil-otlp-app {protocol} {endpoint}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Checks at the collector what `rounds` rounds of `vigil-otlp-app` recorded.
fn expect_app(collector: &Collector, instance: &str, job: &str, rounds: u32) -> Result<()> {
    let r = f64::from(rounds);
    let me = format!("instance=\"{instance}\",job=\"{job}\"");
    expect(
        collector,
        &format!("app_requests_total{{{me},route=\"/a\"}}"),
        3.0 * r,
    )?;
    expect(
        collector,
        &format!("app_requests_total{{{me},route=\"/b\"}}"),
        r,
    )?;
    expect(collector, &format!("app_queue{{{me}}}"), 3.0 * r)?;
    expect(
        collector,
        &format!("app_temperature_celsius{{{me}}}"),
        r + 0.5,
    )?;
    // 0.05, 0.2, 0.7 and 2 each round, against bounds 0.1, 0.5, 1.
    for (le, n) in [("0.1", 1.0), ("0.5", 2.0), ("1", 3.0), ("+Inf", 4.0)] {
        expect(
            collector,
            &format!("app_latency_seconds_bucket{{{me},le=\"{le}\"}}"),
            n * r,
        )?;
    }
    expect(
        collector,
        &format!("app_latency_seconds_count{{{me}}}"),
        4.0 * r,
    )?;
    let sum =
        value(collector, &format!("app_latency_seconds_sum{{{me}}}")).context("latency sum")?;
    ensure!((sum - 2.95 * r).abs() < 1e-9, "latency sum {sum}");
    // The exponential histogram, as windows: exact count and sum.
    expect(
        collector,
        &format!("app_payload_bytes_count{{{me}}}"),
        100.0 * r,
    )?;
    expect(
        collector,
        &format!("app_payload_bytes_sum{{{me}}}"),
        50_500.0 * r,
    )?;
    // Its median across every window: 500 recorded; the bucket's middle is
    // within 3 % (the scale the SDK picks for 10..1000 in 160 buckets).
    let (status, q) = get_json(
        collector.http,
        &format!(
            "/api/v1/vigil/quantile?query={}&q=0.5",
            vigil_tests::url_encode(&format!("app_payload_bytes{{{me}}}"))
        ),
    )?;
    ensure!(status == 200, "quantile: HTTP {status}: {q}");
    ensure!(q["data"]["count"] == 100 * rounds, "quantile count: {q}");
    let median: f64 = q["data"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .context("quantile value")?;
    ensure!((median - 500.0).abs() <= 15.0, "median {median}: {q}");
    // Resource attributes other than the service's go on target_info.
    expect(
        collector,
        &format!("target_info{{{me},deployment_environment=\"test\"}}"),
        1.0,
    )?;
    Ok(())
}

#[test]
fn the_sdk_exports_over_grpc_and_http_and_arrive_exactly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let (grpc, http) = (free_port()?, free_port()?);
    let agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(
            &collector,
            "otlp-e2e",
            &format!("grpc = \"127.0.0.1:{grpc}\"\nhttp = \"127.0.0.1:{http}\""),
        ),
    )?;
    agent.wait_for_log("OTLP listening", Duration::from_secs(20))?;
    wait_for("both OTLP listeners", Duration::from_secs(20), || {
        (agent.log().matches("OTLP listening").count() == 2).then_some(())
    })?;
    let grpc_url = format!("http://127.0.0.1:{grpc}");
    let http_url = format!("http://127.0.0.1:{http}/v1/metrics");
    run_app("grpc", &grpc_url, "svc-grpc", "cumulative", 2)?;
    run_app("http-proto", &http_url, "svc-proto", "delta", 2)?;
    run_app("http-json", &http_url, "svc-json", "cumulative", 2)?;
    expect_app(&collector, "otlp-e2e", "svc-grpc", 2)?;
    expect_app(&collector, "otlp-e2e", "svc-proto", 2)?;
    expect_app(&collector, "otlp-e2e", "svc-json", 2)?;
    // Each round, and the SDK's last export at shutdown.
    for (transport, n) in [("grpc", 3.0), ("http", 6.0)] {
        expect(
            &collector,
            &format!(
                "vigil_agent_otlp_requests_total{{instance=\"otlp-e2e\",transport=\"{transport}\",outcome=\"ok\"}}"
            ),
            n,
        )?;
    }
    // Five instruments, the counter with two routes: six points an
    // export. Cumulative applications export all six again at shutdown; a
    // delta one only its up-down counter (the SDK keeps those cumulative):
    // 6 × 3 + (6 × 2 + 1) + 6 × 3.
    expect(
        &collector,
        "vigil_agent_otlp_data_points_total{instance=\"otlp-e2e\"}",
        49.0,
    )?;
    Ok(())
}

/// A JSON export request of one resource and these metrics.
fn json_request(service: &str, metrics: &str) -> String {
    format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},"scopeMetrics":[{{"metrics":[{metrics}]}}]}}]}}"#
    )
}

fn post(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Result<(u16, String)> {
    let (status, body) = http_post_bytes(addr, "/v1/metrics", headers, body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[test]
fn refused_points_get_partial_success_and_bad_requests_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let http = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{http}").parse()?;
    let agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(
            &collector,
            "otlp-hostile",
            &format!(
                "grpc = \"\"\nhttp = \"127.0.0.1:{http}\"\nmax_series = 20\nmax_request_size = \"64KiB\""
            ),
        ),
    )?;
    agent.wait_for_log("OTLP listening", Duration::from_secs(20))?;
    let json = [("Content-Type", "application/json")];

    // 50 new series against a limit of 20, a name in the host's own
    // families and a counter going negative: 20 taken, 32 refused.
    let points: Vec<String> = (0..50)
        .map(|i| {
            format!(r#"{{"asInt":"1","attributes":[{{"key":"n","value":{{"intValue":"{i}"}}}}]}}"#)
        })
        .collect();
    let metrics = format!(
        r#"{{"name":"flood","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{}]}}}},
           {{"name":"node.load1","gauge":{{"dataPoints":[{{"asDouble":999}}]}}}},
           {{"name":"neg","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"asDouble":-1}}]}}}}"#,
        points.join(",")
    );
    let (status, body) = post(addr, &json, json_request("hostile", &metrics).as_bytes())?;
    ensure!(status == 200, "HTTP {status}: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body)?;
    ensure!(
        answer["partialSuccess"]["rejectedDataPoints"] == "32"
            || answer["partialSuccess"]["rejectedDataPoints"] == 32,
        "partial success: {body}"
    );
    ensure!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("max_series")),
        "partial success message: {body}"
    );
    expect(
        &collector,
        "count(flood_total{instance=\"otlp-hostile\"})",
        20.0,
    )?;
    for (reason, n) in [
        ("max_series", 30.0),
        ("reserved_name", 1.0),
        ("invalid", 1.0),
    ] {
        expect(
            &collector,
            &format!(
                "vigil_agent_otlp_rejected_data_points_total{{instance=\"otlp-hostile\",reason=\"{reason}\"}}"
            ),
            n,
        )?;
    }
    // The host's own series are untouched.
    ensure!(
        value(&collector, "node_load1{instance=\"otlp-hostile\"}").is_some_and(|v| v != 999.0),
        "node_load1 was overwritten or is missing"
    );

    // Malformed bodies: 400 naming the problem, for JSON and protobuf.
    let (status, body) = post(addr, &json, br#"{"resourceMetrics": [{"resource": 5}]}"#)?;
    ensure!(
        status == 400 && body.contains("JSON body"),
        "HTTP {status}: {body}"
    );
    let (status, body) = post(
        addr,
        &[("Content-Type", "application/x-protobuf")],
        &[0xff; 32],
    )?;
    ensure!(
        status == 400 && body.contains("protobuf body"),
        "HTTP {status}: {body}"
    );
    // Another content type or encoding: 415.
    let (status, _) = post(addr, &[("Content-Type", "text/plain")], b"x")?;
    ensure!(status == 415, "text/plain: HTTP {status}");
    let (status, _) = post(
        addr,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "br"),
        ],
        b"x",
    )?;
    ensure!(status == 415, "br: HTTP {status}");
    // Over 64 KiB as sent: 413.
    let big = vec![b' '; 100 * 1024];
    let (status, _) = post(addr, &json, &big)?;
    ensure!(status == 413, "100 KiB body: HTTP {status}");
    // 10 MB of gzip that fits in 64 KiB as sent: 413 once decompressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 10 << 20])?;
    let bomb = gz.finish()?;
    ensure!(bomb.len() < 64 * 1024, "the bomb is {} bytes", bomb.len());
    let gzip_json = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
    ];
    let (status, body) = post(addr, &gzip_json, &bomb)?;
    ensure!(
        status == 413 && body.contains("decompressed"),
        "gzip bomb: HTTP {status}: {body}"
    );
    // A good gzip body is taken.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(
        json_request(
            "hostile",
            r#"{"name":"zipped","gauge":{"dataPoints":[{"asDouble":7}]}}"#,
        )
        .as_bytes(),
    )?;
    let (status, body) = post(addr, &gzip_json, &gz.finish()?)?;
    // `zipped` is a new series over the limit of 20: refused, and said so.
    ensure!(
        status == 200 && body.contains("rejectedDataPoints"),
        "gzip: HTTP {status}: {body}"
    );
    for (outcome, n) in [
        ("invalid", 2.0),
        ("unsupported", 2.0),
        ("too_large", 2.0),
        ("partial", 2.0),
    ] {
        expect(
            &collector,
            &format!(
                "vigil_agent_otlp_requests_total{{instance=\"otlp-hostile\",transport=\"http\",outcome=\"{outcome}\"}}"
            ),
            n,
        )?;
    }
    // Still serving after all that.
    let (status, _) = post(
        addr,
        &json,
        json_request("hostile", r#"{"name":"flood","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"9","attributes":[{"key":"n","value":{"intValue":"0"}}]}]}}"#).as_bytes(),
    )?;
    ensure!(status == 200, "HTTP {status}");
    expect(
        &collector,
        "flood_total{instance=\"otlp-hostile\",n=\"0\"}",
        9.0,
    )?;
    Ok(())
}

#[test]
fn ports_held_by_others_leave_the_agent_shipping_and_the_listeners_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let (statsd, grpc) = (udp.local_addr()?.port(), tcp.local_addr()?.port());
    let http = free_port()?;
    let agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"otlp-taken\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
             [collector]\nendpoint = \"http://{}\"\n[sources.statsd]\nudp = \"127.0.0.1:{statsd}\"\n\
             [sources.otlp]\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"127.0.0.1:{http}\"\n",
            collector.ingest
        ),
    )?;
    agent.wait_for_log("OTLP cannot listen", Duration::from_secs(20))?;
    agent.wait_for_log("StatsD cannot listen", Duration::from_secs(20))?;
    let me = std::fs::read_to_string("/proc/self/comm")?;
    let pid = format!("pid {}", std::process::id());
    let log = agent.log();
    let line = log
        .lines()
        .find(|l| l.contains("OTLP cannot listen"))
        .unwrap_or_default();
    ensure!(
        line.contains(&pid) && line.contains(me.trim()),
        "the log does not name the process holding the gRPC port: {line}"
    );
    for (listener, up) in [("statsd_udp", 0.0), ("otlp_grpc", 0.0), ("otlp_http", 1.0)] {
        expect(
            &collector,
            &format!("vigil_agent_listener_up{{instance=\"otlp-taken\",listener=\"{listener}\"}}"),
            up,
        )?;
    }
    wait_for("node_load1", Duration::from_secs(30), || {
        value(&collector, "node_load1{instance=\"otlp-taken\"}")
    })?;
    // Freed, both ports are taken within the 10 s retry, and gRPC serves.
    drop(udp);
    drop(tcp);
    for listener in ["statsd_udp", "otlp_grpc"] {
        expect(
            &collector,
            &format!("vigil_agent_listener_up{{instance=\"otlp-taken\",listener=\"{listener}\"}}"),
            1.0,
        )?;
    }
    run_app(
        "grpc",
        &format!("http://127.0.0.1:{grpc}"),
        "late",
        "delta",
        1,
    )?;
    expect(
        &collector,
        "app_requests_total{instance=\"otlp-taken\",job=\"late\",route=\"/b\"}",
        1.0,
    )?;
    Ok(())
}

#[test]
fn a_grpc_request_over_the_size_limit_is_refused_and_counted() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let grpc = free_port()?;
    let agent = start_agent(
        dir.path(),
        "agent",
        &agent_config(
            &collector,
            "otlp-size",
            &format!("grpc = \"127.0.0.1:{grpc}\"\nhttp = \"\"\nmax_request_size = \"1KiB\""),
        ),
    )?;
    agent.wait_for_log("OTLP listening", Duration::from_secs(20))?;
    // A resource attribute of 4 KiB makes the export larger than 1 KiB.
    let out = Command::new(binary("vigil-otlp-app")?)
        .args([
            "grpc",
            &format!("http://127.0.0.1:{grpc}"),
            "big",
            "delta",
            "1",
        ])
        .env("PADDING_BYTES", "4096")
        .output()?;
    ensure!(
        !out.status.success(),
        "a 4 KiB export was taken under a 1 KiB limit: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The round's export and the one at shutdown, each once: refused with
    // INVALID_ARGUMENT, which the exporter does not retry.
    expect(
        &collector,
        "vigil_agent_otlp_requests_total{instance=\"otlp-size\",transport=\"grpc\",outcome=\"too_large\"}",
        2.0,
    )?;
    ensure!(
        value(
            &collector,
            "count(app_requests_total{instance=\"otlp-size\"})"
        )
        .is_none(),
        "part of a refused request was kept"
    );
    Ok(())
}

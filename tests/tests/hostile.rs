//! Hostile input against the real collector: every refusal is an answer
//! that names the limit, the collector stays up, and each refusal is
//! counted. Each test tries what an attacker or a careless client would.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use vigil_shared::proto::ingest_client::IngestClient;
use vigil_shared::proto::{Family, Kind, Label, PushRequest, RETRY_AFTER_METADATA, Series};
use vigil_tests::{Collector, binary, http_get, http_post, url_encode, wait_for};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// POSTs a query as a form: status and body.
fn post_query(collector: &Collector, path: &str, form: &str) -> Result<(u16, String)> {
    http_post(collector.http, path, &[FORM], form)
}

fn healthy(collector: &Collector) -> Result<()> {
    let (status, _, body) = http_get(collector.http, "/-/healthy", None)?;
    ensure!(status == 200, "/-/healthy: {status} {body}");
    Ok(())
}

#[test]
fn deep_long_and_huge_queries_are_refused_and_the_collector_stays_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_with(dir.path(), "[query]\nmax_samples = 1000000\n")?;

    // `1+1+…` with 5,000 terms (10 KB): aborted the collector by stack overflow.
    let chain = vec!["1"; 5000].join("+");
    let (status, body) = post_query(
        &collector,
        "/api/v1/query",
        &format!("query={}", url_encode(&chain)),
    )?;
    ensure!(
        status == 400 && body.contains("nests 4999 levels"),
        "{status} {body}"
    );
    healthy(&collector)?;

    // 1,500 nested parentheses.
    let parens = format!("{}1{}", "(".repeat(1500), ")".repeat(1500));
    let (status, body) = post_query(
        &collector,
        "/api/v1/query",
        &format!("query={}", url_encode(&parens)),
    )?;
    ensure!(
        status == 400 && body.contains("nests 1500 levels"),
        "{status} {body}"
    );

    // Numbers of seconds too large for a duration (found by fuzzing): the
    // parser turned them into a `Duration` and aborted the release build.
    for query in ["x[15e73777]", "x offset 1e300", "rate(x[5m:1e300])"] {
        let (status, body) = post_query(
            &collector,
            "/api/v1/query",
            &format!("query={}", url_encode(query)),
        )?;
        ensure!(
            status == 400 && body.contains("out of range"),
            "{query}: {status} {body}"
        );
    }
    healthy(&collector)?;

    // A year of one-millisecond subquery steps: refused by the sample limit.
    let (status, body) = post_query(
        &collector,
        "/api/v1/query",
        &format!("query={}", url_encode("count_over_time(vector(1)[1y:1ms])")),
    )?;
    ensure!(
        status == 422 && body.contains("max_samples"),
        "{status} {body}"
    );

    // Times far outside any calendar.
    let (status, _, body) = http_get(
        collector.http,
        "/api/v1/query_range?query=up&start=-1e300&end=1&step=1",
        None,
    )?;
    ensure!(
        status == 400 && body.contains("invalid time"),
        "{status} {body}"
    );
    let (status, _, body) = http_get(
        collector.http,
        "/api/v1/query?query=up%20offset%201000000000y",
        None,
    )?;
    ensure!(status == 200, "{status} {body}");
    healthy(&collector)?;

    let scrape = collector.scrape()?;
    let refused = |reason| {
        scrape
            .value(
                "vigil_collector_queries_refused_total",
                &[("reason", reason)],
            )
            .unwrap_or(0.0)
    };
    ensure!(refused("invalid") >= 6.0, "invalid: {}", refused("invalid"));
    ensure!(refused("max_samples") == 1.0);
    Ok(())
}

#[test]
fn a_query_beyond_max_concurrent_waits_then_gets_503() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_with(
        dir.path(),
        "[query]\nmax_concurrent = 1\ntimeout = \"5s\"\n",
    )?;
    // One slow query holds the only slot (it ends at its own 5 s timeout).
    let addr = collector.http;
    let slow = std::thread::spawn(move || {
        http_post(
            addr,
            "/api/v1/query",
            &[FORM],
            &format!(
                "query={}",
                url_encode("count_over_time(vector(1)[30d:1ms])")
            ),
        )
    });
    wait_for("the slow query to run", Duration::from_secs(10), || {
        collector
            .scrape()
            .ok()
            .and_then(|s| s.value("vigil_collector_queries_running", &[]))
            .filter(|running| *running == 1.0)
    })?;
    // Another waits at most its own timeout for the slot, then gets 503.
    let (status, _, body) = http_get(collector.http, "/api/v1/query?query=1&timeout=0.3", None)?;
    ensure!(
        status == 503 && body.contains("max_concurrent"),
        "{status} {body}"
    );
    healthy(&collector)?;
    let (status, body) = slow
        .join()
        .map_err(|_| anyhow::anyhow!("the slow query's thread panicked"))??;
    ensure!(
        status == 503 || status == 422,
        "slow query: {status} {body}"
    );
    let scrape = collector.scrape()?;
    ensure!(
        scrape.value(
            "vigil_collector_queries_refused_total",
            &[("reason", "concurrency")]
        ) == Some(1.0),
        "{:?}",
        scrape.value(
            "vigil_collector_queries_refused_total",
            &[("reason", "concurrency")]
        )
    );
    // The slot is free again.
    let (status, _, body) = http_get(collector.http, "/api/v1/query?query=1", None)?;
    ensure!(status == 200, "{status} {body}");
    Ok(())
}

#[test]
fn hostile_rule_files_are_refused_and_runaway_templates_are_stopped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let vigil = binary("vigil-collector")?;
    let check = |file: &std::path::Path| -> Result<(i32, String)> {
        let out = std::process::Command::new(&vigil)
            .args(["rules", "check"])
            .arg(file)
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    // A 5,000-term expression: refused by the check, not evaluated later.
    let deep = dir.path().join("deep.rules.yml");
    std::fs::write(
        &deep,
        format!(
            "groups:\n  - name: deep\n    rules:\n      - alert: Deep\n        expr: {}\n",
            vec!["1"; 5000].join("+")
        ),
    )?;
    let (code, out) = check(&deep)?;
    ensure!(
        code == 1 && out.contains("nests 4999 levels"),
        "{code}: {out}"
    );
    // A 9 MB file: refused before it is parsed.
    let big = dir.path().join("big.rules.yml");
    let mut text = String::from("groups: []\n");
    while text.len() < 9 * 1024 * 1024 {
        text.push_str("# padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, text)?;
    let (code, out) = check(&big)?;
    ensure!(
        code == 1 && out.contains("rules.max_file_size"),
        "{code}: {out}"
    );

    // A template that would loop 10^12 times: the rule still fires, its
    // annotation says why it could not be expanded, and the collector
    // answers meanwhile.
    let rules = dir.path().join("bomb.rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: bomb\n    interval: 500ms\n    rules:\n      - alert: Bomb\n        expr: vector(1)\n        annotations:\n          text: '{{ range 1000000 }}{{ range 1000000 }}x{{ end }}{{ end }}'\n",
    )?;
    let collector = Collector::start_with(
        dir.path(),
        &format!(
            "[rules]\nfiles = [\"{}\"]\nhost_down = false\n",
            rules.display()
        ),
    )?;
    let alerts = wait_for("the Bomb alert", Duration::from_secs(20), || {
        http_get(collector.http, "/api/v2/alerts", None)
            .ok()
            .filter(|(s, _, body)| *s == 200 && body.contains("Bomb"))
            .map(|(_, _, body)| body)
    })?;
    ensure!(
        alerts.contains("error expanding template") && alerts.contains("steps"),
        "{alerts}"
    );
    healthy(&collector)?;
    let failures = collector
        .scrape()?
        .value("vigil_collector_template_failures_total", &[])
        .unwrap_or(0.0);
    ensure!(failures >= 1.0, "template failures counted: {failures}");

    // Reload with the deep file in place: refused, the old rules keep running.
    std::fs::copy(&deep, &rules)?;
    let (status, body) = http_post(collector.http, "/-/reload", &[], "")?;
    ensure!(status == 400 && body.contains("nests"), "{status} {body}");
    healthy(&collector)?;
    Ok(())
}

/// One gauge family with a series per `instances` entry (and `extra` more
/// series on the first, distinguished by an `i` label).
fn push_request(agent: &str, sequence: u64, instances: &[&str], extra: usize) -> PushRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let mut series: Vec<Series> = instances
        .iter()
        .map(|i| Series {
            labels: vec![label("instance", i), label("job", "node")],
            value: 1.0,
            timestamp_ms: now,
            window: None,
        })
        .collect();
    for n in 0..extra {
        series.push(Series {
            labels: vec![
                label("i", &format!("{sequence}-{n}")),
                label("instance", instances[0]),
                label("job", "node"),
            ],
            value: 1.0,
            timestamp_ms: now,
            window: None,
        });
    }
    PushRequest {
        agent_id: agent.into(),
        epoch: 7,
        sequence,
        timestamp_ms: now,
        flush_interval_ms: 1_000,
        families: vec![Family {
            name: "node_load1".into(),
            help: String::new(),
            kind: Kind::Gauge as i32,
            bucket_bounds: vec![],
            series,
        }],
        ..Default::default()
    }
}

async fn push(
    client: &mut IngestClient<tonic::transport::Channel>,
    token: &str,
    batch: PushRequest,
) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(batch);
    if let Ok(v) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", v);
    }
    client.push(request).await.map(|_| ())
}

#[test]
fn a_token_writes_only_its_own_instance_and_per_agent_limits_hold() -> Result<()> {
    const WEB1: &str = "token-of-web-1-0123456789";
    const FLEET: &str = "token-of-the-fleet-0123456789";
    let dir = tempfile::tempdir()?;
    let collector = Collector::start(
        dir.path(),
        "collector",
        vigil_tests::free_port()?,
        vigil_tests::free_port()?,
        "max_pushes_per_second = 3\nmax_new_series_per_minute = 100\n",
        &format!(
            "[[ingest.agents]]\ninstance = \"web-1\"\ntoken = \"{WEB1}\"\n[[ingest.agents]]\ninstance = \"*\"\ntoken = \"{FLEET}\"\n"
        ),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = IngestClient::connect(format!("http://{}", collector.ingest)).await?;
        // web-1's token writing web-2's and victim-db's series: refused, named.
        let err = push(
            &mut client,
            WEB1,
            push_request("web-1", 1, &["web-1", "web-2"], 0),
        )
        .await
        .err()
        .context("a foreign instance was accepted")?;
        ensure!(
            err.code() == tonic::Code::PermissionDenied
                && err.message().contains("instance=\"web-2\""),
            "{err:?}"
        );
        let err = push(
            &mut client,
            WEB1,
            push_request("web-1", 2, &["victim-db"], 0),
        )
        .await
        .err()
        .context("a foreign instance was accepted")?;
        ensure!(err.code() == tonic::Code::PermissionDenied, "{err:?}");
        push(&mut client, WEB1, push_request("web-1", 3, &["web-1"], 0)).await?;
        // The "*" token is trusted with any instance.
        push(
            &mut client,
            FLEET,
            push_request("relay", 1, &["db-1", "db-2"], 0),
        )
        .await?;

        // A flush interval of 2^62 ms: refused, and the collector keeps marking.
        let mut huge = push_request("relay", 2, &["db-1"], 0);
        huge.flush_interval_ms = 1 << 62;
        let err = push(&mut client, FLEET, huge)
            .await
            .err()
            .context("accepted 2^62")?;
        ensure!(err.code() == tonic::Code::InvalidArgument, "{err:?}");

        // More new series than a minute allows in one push: refused for good.
        let err = push(
            &mut client,
            FLEET,
            push_request("flood", 1, &["flood"], 150),
        )
        .await
        .err()
        .context("150 new series accepted")?;
        ensure!(
            err.code() == tonic::Code::InvalidArgument
                && err.message().contains("max_new_series_per_minute"),
            "{err:?}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        push(&mut client, FLEET, push_request("flood", 2, &["flood"], 80)).await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        // 80 more: the minute's budget is spent; wait and retry.
        let err = push(&mut client, FLEET, push_request("flood", 3, &["flood"], 80))
            .await
            .err()
            .context("160 new series in a minute accepted")?;
        ensure!(
            err.code() == tonic::Code::ResourceExhausted
                && err.metadata().get(RETRY_AFTER_METADATA).is_some(),
            "{err:?}"
        );

        // Pushes beyond 3 a second: RESOURCE_EXHAUSTED with a retry delay;
        // another agent is not affected.
        let mut limited = None;
        for sequence in 10..20 {
            if let Err(e) = push(
                &mut client,
                WEB1,
                push_request("web-1", sequence, &["web-1"], 0),
            )
            .await
            {
                limited = Some(e);
                break;
            }
        }
        let limited = limited.context("10 pushes in a row were all accepted")?;
        ensure!(
            limited.code() == tonic::Code::ResourceExhausted
                && limited.metadata().get(RETRY_AFTER_METADATA).is_some(),
            "{limited:?}"
        );
        push(&mut client, FLEET, push_request("relay", 3, &["db-1"], 0)).await?;
        anyhow::Ok(())
    })?;
    healthy(&collector)?;
    let scrape = collector.scrape()?;
    ensure!(
        scrape
            .value("node_load1", &[("instance", "web-2")])
            .is_none()
            && scrape
                .value("node_load1", &[("instance", "victim-db")])
                .is_none(),
        "a foreign series reached the store"
    );
    ensure!(scrape.value("node_load1", &[("instance", "db-2")]) == Some(1.0));
    for (agent, limit) in [
        ("web-1", "push_rate"),
        ("flood", "new_series"),
        ("relay", "flush_interval"),
    ] {
        let n = scrape
            .value(
                "vigil_collector_pushes_limited_total",
                &[("agent", agent), ("limit", limit)],
            )
            .unwrap_or(0.0);
        ensure!(n >= 1.0, "{agent} {limit}: {n}");
    }
    ensure!(
        scrape.value(
            "vigil_collector_pushes_rejected_total",
            &[("reason", "permission_denied")]
        ) == Some(2.0)
    );
    Ok(())
}

/// Sends any bytes as a push, as a client that is not a Vigil agent could.
#[derive(Debug, Clone, Copy, Default)]
struct AnyBytes;

#[derive(Debug, Clone, Copy, Default)]
struct AnyBytesEncoder;

#[derive(Debug, Clone, Copy, Default)]
struct ResponseDecoder;

impl tonic::codec::Encoder for AnyBytesEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for ResponseDecoder {
    type Item = vigil_shared::proto::PushResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        use prost::Message;
        vigil_shared::proto::PushResponse::decode(buf)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl tonic::codec::Codec for AnyBytes {
    type Encode = Vec<u8>;
    type Decode = vigil_shared::proto::PushResponse;
    type Encoder = AnyBytesEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        AnyBytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

async fn push_bytes(
    channel: &tonic::transport::Channel,
    bytes: Vec<u8>,
) -> Result<vigil_shared::proto::PushResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/vigil.v1.Ingest/Push");
    grpc.unary(tonic::Request::new(bytes), path, AnyBytes)
        .await
        .map(tonic::Response::into_inner)
}

#[test]
fn bytes_that_are_not_a_push_are_refused_naming_the_field_and_byte() -> Result<()> {
    use prost::Message;
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let good = push_request("web-1", 1, &["web-1"], 0).encode_to_vec();
    // The same push with its label value "node" made invalid UTF-8.
    let mut bad_label = good.clone();
    let at = bad_label
        .windows(5)
        .position(|w| w == b"\x04node")
        .context("the job label is in the bytes")?;
    bad_label[at + 1] = 0xff;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "agent_id not UTF-8",
            vec![0x0a, 0x02, 0xc3, 0x28],
            "agent_id is not UTF-8 at byte 2",
        ),
        (
            "a length past the end",
            vec![0x32, 0x7f, 0x0a],
            "field runs past the end",
        ),
        (
            "a length of 2^62",
            vec![0x32, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40],
            "field runs past the end",
        ),
        ("a wire type 3 group", vec![0x7b], "unsupported wire type 3"),
        (
            "epoch sent as a string",
            vec![0x12, 0x01, 0x41],
            "epoch has wire type 2",
        ),
        (
            "a label value not UTF-8",
            bad_label,
            "label value is not UTF-8",
        ),
        (
            "the push cut short",
            good[..good.len() - 3].to_vec(),
            "past the end",
        ),
    ];
    runtime.block_on(async {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://{}", collector.ingest))?
                .connect()
                .await?;
        for (what, bytes, expected) in &cases {
            let err = push_bytes(&channel, bytes.clone())
                .await
                .err()
                .with_context(|| format!("{what}: accepted"))?;
            ensure!(
                err.code() == tonic::Code::InvalidArgument && err.message().contains(expected),
                "{what}: {err:?}"
            );
        }
        // The same connection still takes a good push.
        let answer = push_bytes(&channel, good.clone()).await?;
        ensure!(answer.accepted_series == 1, "{answer:?}");
        anyhow::Ok(())
    })?;
    healthy(&collector)?;
    let scrape = collector.scrape()?;
    ensure!(
        scrape.value(
            "vigil_collector_pushes_rejected_total",
            &[("reason", "invalid_argument")]
        ) == Some(cases.len() as f64),
        "every refusal counted"
    );
    ensure!(
        scrape.value("node_load1", &[("instance", "web-1")]) == Some(1.0),
        "the good push is stored"
    );
    Ok(())
}

#[test]
fn a_second_collector_or_agent_on_one_data_folder_refuses_to_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let data = dir.path().join("collector-data");
    let out = std::process::Command::new(binary("vigil-collector")?)
        .args(["--data-dir", &data.to_string_lossy()])
        .args([
            "--config",
            &write_config(
                dir.path(),
                "second.toml",
                "[http]\nlisten = \"127.0.0.1:0\"\n[ingest]\nlisten = \"127.0.0.1:0\"\n",
            )?,
        ])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "second collector: {:?} {stderr}",
        out.status
    );
    ensure!(
        stderr.contains("in use by another process")
            && stderr.contains(&format!("PID {}", collector.process.id())),
        "{stderr}"
    );
    healthy(&collector)?;

    let agent_config = format!(
        "instance = \"twin\"\ndata_dir = \"{}\"\n[collector]\nendpoint = \"http://{}\"\n",
        dir.path().join("twin-data").display(),
        collector.ingest
    );
    let first = vigil_tests::start_agent(dir.path(), "twin-1", &agent_config)?;
    first.wait_for_log("agent started", Duration::from_secs(10))?;
    let config = write_config(dir.path(), "twin-2.toml", &agent_config)?;
    let out = std::process::Command::new(binary("vigil-agent")?)
        .args(["--config", &config])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "second agent: {:?} {stderr}",
        out.status
    );
    ensure!(
        stderr.contains("in use by another process")
            && stderr.contains(&format!("PID {}", first.id())),
        "{stderr}"
    );
    Ok(())
}

fn write_config(dir: &std::path::Path, name: &str, text: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

#[test]
fn state_changes_take_json_only_and_refuse_other_origins() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let host = collector.http.to_string();
    let silence = r#"{"matchers":[{"name":"alertname","value":".+","isRegex":true,"isEqual":true}],"startsAt":"2026-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"x","comment":"mute everything"}"#;
    let post = |headers: &[(&str, &str)], path: &str, body: &str| {
        http_post(collector.http, path, headers, body)
    };
    // What a page on another site can make a browser send without asking.
    let (status, body) = post(
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "http://attacker.example"),
        ],
        "/api/v2/silences",
        silence,
    )?;
    ensure!(
        status == 403 && body.contains("cross-origin"),
        "{status} {body}"
    );
    let (status, body) = post(
        &[("Content-Type", "text/plain")],
        "/api/v2/silences",
        silence,
    )?;
    ensure!(
        status == 415 && body.contains("application/json"),
        "{status} {body}"
    );
    let (status, body) = post(
        &[
            ("Content-Type", "application/json"),
            ("Origin", "http://attacker.example"),
        ],
        "/api/v2/silences",
        silence,
    )?;
    ensure!(status == 403, "{status} {body}");
    let (status, body) = post(
        &[
            ("Sec-Fetch-Site", "cross-site"),
            ("Content-Type", "application/json"),
        ],
        "/api/v2/silences",
        silence,
    )?;
    ensure!(status == 403, "{status} {body}");
    let (status, body) = post(&[("Origin", "http://attacker.example")], "/-/reload", "")?;
    ensure!(status == 403, "reload: {status} {body}");
    let (status, body) = post(
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "/-/reload",
        "a=b",
    )?;
    ensure!(status == 415, "reload: {status} {body}");
    let (_, _, list) = http_get(collector.http, "/api/v2/silences", None)?;
    ensure!(list.trim() == "[]", "a refused silence was stored: {list}");

    // The collector's own origin, and clients that send no Origin, go on.
    let own = format!("http://{host}");
    let (status, body) = post(
        &[("Content-Type", "application/json"), ("Origin", &own)],
        "/api/v2/silences",
        silence,
    )?;
    ensure!(
        status == 200 && body.contains("silenceID"),
        "{status} {body}"
    );
    let (status, body) = post(&[], "/-/reload", "")?;
    ensure!(status == 200, "reload: {status} {body}");
    Ok(())
}

#[test]
fn secrets_never_reach_the_logs() -> Result<()> {
    const ADMIN: &str = "admin-secret-4f1c9e0b7a";
    const AGENT: &str = "agent-secret-8d2e6f1a3c";
    const HASHED: &str = "hashed-agent-secret-5b7d9f";
    const WRONG: &str = "wrong-secret-0a9b8c7d6e";
    const SIGNING: &str = "signing-secret-2c4e6a8b0d";
    const HOOK_PASSWORD: &str = "hook-password-1a3c5e7g9i";
    const HOOK_PATH: &str = "hookpathsecret3b5d7f9h";
    const AM_PASSWORD: &str = "am-password-6h8j0k2m4n";
    let dir = tempfile::tempdir()?;
    let closed = vigil_tests::free_port()?;
    std::fs::write(
        dir.path().join("routing.yml"),
        format!(
            "route:\n  receiver: hook\n  group_wait: 0s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://ops:{HOOK_PASSWORD}@127.0.0.1:{closed}/services/T0/B0/{HOOK_PATH}\n"
        ),
    )?;
    std::fs::write(
        dir.path().join("always.rules.yml"),
        "groups:\n  - name: g\n    interval: 250ms\n    rules:\n      - alert: Always\n        expr: vector(1)\n",
    )?;
    let hashed = {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(HASHED.as_bytes());
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let collector = Collector::start_with_http(
        dir.path(),
        &format!("admin_token = \"{ADMIN}\""),
        &format!(
            "[[ingest.agents]]\ninstance = \"plain\"\ntoken = \"{AGENT}\"\n[[ingest.agents]]\ninstance = \"hashed\"\ntoken_sha256 = \"{hashed}\"\n[rules]\nfiles = [\"{}\"]\nhost_down = false\n[notify]\nalertmanager_config = \"{}\"\nsigning_secret = \"{SIGNING}\"\nretry_initial = \"100ms\"\nforward_to = [\"http://am:{AM_PASSWORD}@127.0.0.1:{closed}\"]\n",
            dir.path().join("always.rules.yml").display(),
            dir.path().join("routing.yml").display()
        ),
    )?;
    let agent_config = |instance: &str, token: &str| {
        format!(
            "instance = \"{instance}\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\ntoken = \"{token}\"\n",
            collector.ingest
        )
    };
    let plain = vigil_tests::start_agent(dir.path(), "plain", &agent_config("plain", AGENT))?;
    let hashed_agent =
        vigil_tests::start_agent(dir.path(), "hashed", &agent_config("hashed", HASHED))?;
    let wrong = vigil_tests::start_agent(dir.path(), "wrong", &agent_config("wrong", WRONG))?;
    // A refused reload with a wrong admin token, failed webhooks and
    // forwards, a refused agent: everything that logs around a secret.
    let (status, _) = http_post(
        collector.http,
        "/-/reload",
        &[("Authorization", &format!("Bearer {WRONG}"))],
        "",
    )?;
    ensure!(status == 401, "reload with a wrong token: {status}");
    wrong.wait_for_log("refused", Duration::from_secs(20))?;
    collector
        .process
        .wait_for_log("will retry", Duration::from_secs(20))?;
    collector
        .process
        .wait_for_log("cannot reach alertmanager", Duration::from_secs(20))?;
    wait_for("both agents' batches", Duration::from_secs(20), || {
        collector.scrape().ok().filter(|s| {
            s.value("vigil_agent_samples_total", &[("instance", "plain")])
                .is_some()
                && s.value("vigil_agent_samples_total", &[("instance", "hashed")])
                    .is_some()
        })
    })?;
    for (name, log) in [
        ("collector", collector.process.log()),
        ("plain", plain.log()),
        ("hashed", hashed_agent.log()),
        ("wrong", wrong.log()),
    ] {
        for secret in [
            ADMIN,
            AGENT,
            HASHED,
            WRONG,
            SIGNING,
            HOOK_PASSWORD,
            HOOK_PATH,
            AM_PASSWORD,
        ] {
            ensure!(!log.contains(secret), "{name}'s log shows {secret}:\n{log}");
        }
    }
    Ok(())
}

/// `curl` against the collector's HTTPS port: (HTTP status, headers and body).
fn curl(dir: &std::path::Path, url: &str, args: &[&str]) -> Result<(u16, String)> {
    let curl = vigil_tests::require_peer("curl", "curl")?;
    let out = std::process::Command::new(curl)
        .current_dir(dir)
        .args(["-s", "-i", "--max-time", "10", "--cacert", "ca.pem"])
        .args(args)
        .arg(url)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

#[test]
fn the_http_port_takes_prometheus_web_config_tls_client_certs_basic_auth_and_headers() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    vigil_tests::make_certificates(d)?;
    let hash = bcrypt::hash("grafana-password", 4)?;
    std::fs::write(
        d.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.pk8\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS12\nbasic_auth_users:\n  grafana: '{hash}'\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        ),
    )?;
    let port = vigil_tests::free_port()?;
    std::fs::write(
        d.join("collector.toml"),
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\nweb_config_file = \"web.yml\"\n[ingest]\nlisten = \"127.0.0.1:{}\"\n[store]\ndata_dir = \"{}\"\n",
            vigil_tests::free_port()?,
            d.join("data").display()
        ),
    )?;
    let collector = vigil_tests::Process::start(
        "collector",
        &binary("vigil-collector")?,
        &["--config", &d.join("collector.toml").to_string_lossy()],
        d,
    )?;
    let base = format!("https://127.0.0.1:{port}");
    let cert = ["--cert", "client.pem", "--key", "client.pk8"];
    let login = ["-u", "grafana:grafana-password"];
    wait_for("the HTTPS port", Duration::from_secs(20), || {
        curl(d, &format!("{base}/-/healthy"), &cert)
            .ok()
            .filter(|(s, _)| *s == 200)
    })
    .map_err(|e| anyhow::anyhow!("{e}: {}", collector.log()))?;

    // A client certificate and a login: served, with the configured header.
    let (status, text) = curl(
        d,
        &format!("{base}/metrics"),
        &[&cert[..], &login[..]].concat(),
    )?;
    ensure!(
        status == 200 && text.contains("vigil_collector_"),
        "{status} {text}"
    );
    ensure!(
        text.to_ascii_lowercase().contains("x-frame-options: deny"),
        "{text}"
    );
    // No login, or a wrong one: 401, asking for basic auth.
    let (status, text) = curl(d, &format!("{base}/metrics"), &cert)?;
    ensure!(
        status == 401 && text.contains("Basic realm"),
        "{status} {text}"
    );
    let (status, _) = curl(
        d,
        &format!("{base}/api/v1/query?query=1"),
        &[&cert[..], &["-u", "grafana:wrong"][..]].concat(),
    )?;
    ensure!(status == 401, "wrong password: {status}");
    // No client certificate: the handshake fails.
    let (status, _) = curl(d, &format!("{base}/-/healthy"), &login)?;
    ensure!(status == 0, "served without a client certificate: {status}");
    // Plain HTTP on the TLS port gets nothing.
    ensure!(
        http_get(format!("127.0.0.1:{port}").parse()?, "/-/healthy", None)
            .map(|(s, _, _)| s != 200)
            .unwrap_or(true)
    );
    // /-/healthy needs no login; an admin call is served for a basic-auth user.
    let (status, _) = curl(d, &format!("{base}/-/healthy"), &cert)?;
    ensure!(status == 200);
    let (status, text) = curl(
        d,
        &format!("{base}/-/reload"),
        &[&cert[..], &login[..], &["-X", "POST"][..]].concat(),
    )?;
    ensure!(
        status == 200,
        "reload as a basic-auth user: {status} {text}"
    );
    let (_, text) = curl(
        d,
        &format!("{base}/metrics"),
        &[&cert[..], &login[..]].concat(),
    )?;
    let counted = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ensure!(
        counted("vigil_collector_http_auth_failures_total") >= 2.0,
        "{text}"
    );
    ensure!(
        counted("vigil_collector_http_tls_handshake_failures_total") >= 1.0,
        "{text}"
    );
    Ok(())
}

#[test]
fn a_bad_web_config_is_refused_naming_the_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("web.yml"),
        "basic_auth_users:\n  alice: plaintext-password\n",
    )?;
    std::fs::write(
        dir.path().join("collector.toml"),
        "[http]\nweb_config_file = \"web.yml\"\n",
    )?;
    let out = std::process::Command::new(binary("vigil-collector")?)
        .args(["--check-config", "--config"])
        .arg(dir.path().join("collector.toml"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1), "{stderr}");
    ensure!(
        stderr.contains("http.web_config_file")
            && stderr.contains("basic_auth_users.alice: not a bcrypt hash"),
        "{stderr}"
    );
    Ok(())
}

//! Hostile input against the real collector: every refusal is an answer
//! that names the limit, the collector stays up, and each refusal is
//! counted. Each test tries what an attacker or a careless client would.

use std::time::Duration;

use anyhow::{Result, ensure};
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
    ensure!(refused("invalid") >= 3.0, "invalid: {}", refused("invalid"));
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
    collector.scrape()?;

    // Reload with the deep file in place: refused, the old rules keep running.
    std::fs::copy(&deep, &rules)?;
    let (status, body) = http_post(collector.http, "/-/reload", &[], "")?;
    ensure!(status == 400 && body.contains("nests"), "{status} {body}");
    healthy(&collector)?;
    Ok(())
}

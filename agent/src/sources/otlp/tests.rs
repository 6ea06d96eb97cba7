use super::*;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

fn config(max_series: usize) -> OtlpConfig {
    OtlpConfig {
        enabled: true,
        grpc: None,
        http: None,
        max_request_size: 1 << 20,
        max_series,
        instance_from_service: false,
        stale_after: Duration::from_secs(300),
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    }
}

fn point(v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

fn sum(points: Vec<NumberDataPoint>, delta: bool, monotonic: bool) -> Data {
    Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: if delta { 1 } else { 2 },
        is_monotonic: monotonic,
    })
}

fn value(a: &Aggregator, family: &str, label: Option<(&str, &str)>) -> Option<f64> {
    a.entries
        .iter()
        .find(|e| {
            e.family == family
                && label.is_none_or(|(k, v)| e.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|e| e.value)
}

#[test]
fn sums_gauges_and_resources_map_as_the_specification_says() {
    let mut a = Aggregator::new(&config(100));
    let resource = vec![
        kv("service.name", "checkout"),
        kv("service.namespace", "shop"),
        kv("service.instance.id", "pod-7"),
        kv("host.arch", "amd64"),
    ];
    let out = a.export(&request(
        resource.clone(),
        vec![
            metric(
                "http.requests",
                "{request}",
                sum(vec![point(5.0, vec![kv("route", "/a")])], true, true),
            ),
            metric(
                "queue.depth",
                "",
                sum(vec![point(3.0, vec![])], true, false),
            ),
            metric(
                "temperature",
                "Cel",
                Data::Gauge(Gauge {
                    data_points: vec![point(21.5, vec![kv("job", "x")])],
                }),
            ),
            metric(
                "bytes.sent",
                "By",
                sum(vec![point(100.0, vec![])], false, true),
            ),
        ],
    ));
    assert_eq!(
        out,
        Outcome {
            accepted: 4,
            rejected: 0,
            message: String::new()
        }
    );
    a.export(&request(
        resource,
        vec![
            metric(
                "http.requests",
                "{request}",
                sum(vec![point(2.0, vec![kv("route", "/a")])], true, true),
            ),
            metric(
                "queue.depth",
                "",
                sum(vec![point(-1.0, vec![])], true, false),
            ),
            metric(
                "bytes.sent",
                "By",
                sum(vec![point(150.0, vec![])], false, true),
            ),
        ],
    ));
    assert_eq!(
        value(&a, "http_requests_total", Some(("route", "/a"))),
        Some(7.0)
    );
    assert_eq!(value(&a, "queue_depth", None), Some(2.0));
    assert_eq!(value(&a, "bytes_sent_bytes_total", None), Some(150.0));
    assert_eq!(
        value(&a, "temperature_celsius", Some(("exported_job", "x"))),
        Some(21.5)
    );
    let e = a.entries.iter().find(|e| e.family == "http_requests_total");
    let labels: Vec<&str> = e
        .map(|e| e.labels.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_default();
    // The agent's own instance stays: no `instance` label from the resource.
    assert_eq!(labels, ["job", "route"]);
    assert_eq!(
        value(&a, "http_requests_total", Some(("job", "shop/checkout"))),
        Some(7.0)
    );
    let info = a
        .entries
        .iter()
        .find(|e| e.family == "target_info")
        .map(|e| e.labels.clone());
    assert_eq!(
        info,
        Some(vec![
            ("host_arch".to_string(), "amd64".to_string()),
            ("job".to_string(), "shop/checkout".to_string()),
        ])
    );
}

#[test]
fn instance_comes_from_the_service_when_configured() {
    let mut c = config(100);
    c.instance_from_service = true;
    let mut a = Aggregator::new(&c);
    a.export(&request(
        vec![
            kv("service.name", "api"),
            kv("service.instance.id", "pod-7"),
        ],
        vec![metric(
            "up.time",
            "s",
            Data::Gauge(Gauge {
                data_points: vec![point(1.0, vec![])],
            }),
        )],
    ));
    assert_eq!(
        value(&a, "up_time_seconds", Some(("instance", "pod-7"))),
        Some(1.0)
    );
}

#[test]
fn histograms_become_cumulative_buckets() {
    let mut a = Aggregator::new(&config(100));
    let h = |counts: Vec<u64>, sum: f64, delta: bool| {
        metric(
            "rpc.duration",
            "ms",
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    count: counts.iter().sum(),
                    sum: Some(sum),
                    bucket_counts: counts,
                    explicit_bounds: vec![10.0, 100.0],
                    ..Default::default()
                }],
                aggregation_temporality: if delta { 1 } else { 2 },
            }),
        )
    };
    let r = vec![kv("service.name", "api")];
    a.export(&request(r.clone(), vec![h(vec![1, 2, 3], 500.0, true)]));
    a.export(&request(r.clone(), vec![h(vec![1, 0, 0], 5.0, true)]));
    let b = "rpc_duration_milliseconds_bucket";
    assert_eq!(value(&a, b, Some(("le", "10"))), Some(2.0));
    assert_eq!(value(&a, b, Some(("le", "100"))), Some(4.0));
    assert_eq!(value(&a, b, Some(("le", "+Inf"))), Some(7.0));
    assert_eq!(
        value(&a, "rpc_duration_milliseconds_count", None),
        Some(7.0)
    );
    assert_eq!(
        value(&a, "rpc_duration_milliseconds_sum", None),
        Some(505.0)
    );
    // Counts that do not add up are refused.
    let mut bad = h(vec![1, 2, 3], 1.0, false);
    if let Some(Data::Histogram(x)) = bad.data.as_mut() {
        x.data_points[0].count = 99;
    }
    let out = a.export(&request(r, vec![bad]));
    assert_eq!((out.accepted, out.rejected), (0, 1));
    assert_eq!(a.counts().rejected[Reject::Invalid.index()], 1);
}

#[test]
fn summaries_give_quantiles_sum_and_count() {
    let mut a = Aggregator::new(&config(100));
    a.export(&request(
        vec![kv("service.name", "api")],
        vec![metric(
            "latency",
            "s",
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    count: 10,
                    sum: 2.5,
                    quantile_values: vec![ValueAtQuantile {
                        quantile: 0.99,
                        value: 0.9,
                    }],
                    ..Default::default()
                }],
            }),
        )],
    ));
    assert_eq!(
        value(&a, "latency_seconds", Some(("quantile", "0.99"))),
        Some(0.9)
    );
    assert_eq!(value(&a, "latency_seconds_count", None), Some(10.0));
    assert_eq!(value(&a, "latency_seconds_sum", None), Some(2.5));
}

fn exp_point(
    start: u64,
    scale: i32,
    offset: i32,
    counts: Vec<u64>,
    sum: f64,
) -> ExponentialHistogramDataPoint {
    ExponentialHistogramDataPoint {
        start_time_unix_nano: start,
        count: counts.iter().sum(),
        sum: Some(sum),
        scale,
        positive: Some(Buckets {
            offset,
            bucket_counts: counts,
        }),
        ..Default::default()
    }
}

fn exp(p: ExponentialHistogramDataPoint, delta: bool) -> Metric {
    metric(
        "work.duration",
        "s",
        Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p],
            aggregation_temporality: if delta { 1 } else { 2 },
        }),
    )
}

#[test]
fn exponential_histograms_become_weighted_windows_of_what_is_new() {
    let mut a = Aggregator::new(&config(100));
    let r = vec![kv("service.name", "api")];
    let after_start = a.started_ns + 1;
    // Scale 0: bucket i covers (2^i, 2^(i+1)]; middles 2^(i+0.5).
    a.export(&request(
        r.clone(),
        vec![exp(exp_point(after_start, 0, 0, vec![2, 1], 7.0), false)],
    ));
    a.export(&request(
        r.clone(),
        vec![exp(exp_point(after_start, 0, 0, vec![3, 1], 8.5), false)],
    ));
    let e = a
        .entries
        .iter()
        .find(|e| e.family == "work_duration_seconds");
    let pending = e.map(|e| (e.pending.clone(), e.pending_count));
    let m0 = 0.5f64.exp2();
    let m1 = 1.5f64.exp2();
    assert_eq!(
        pending,
        Some((
            Weighted {
                values: vec![(m0, 3), (m1, 1)],
                sum: 8.5
            },
            4
        ))
    );
    // A coarser scale next: the previous point is downscaled before the
    // difference (scale -1: bucket 0 covers (1, 4]).
    a.export(&request(
        r.clone(),
        vec![exp(exp_point(after_start, -1, 0, vec![5], 10.0), false)],
    ));
    let e = a
        .entries
        .iter()
        .find(|e| e.family == "work_duration_seconds");
    let pending = e.map(|e| e.pending_count);
    assert_eq!(pending, Some(5));
    // A series first seen with a start before the agent's: a baseline only.
    let mut a = Aggregator::new(&config(100));
    a.export(&request(
        r.clone(),
        vec![exp(exp_point(1, 0, 0, vec![100], 150.0), false)],
    ));
    a.export(&request(
        r,
        vec![exp(exp_point(1, 0, 0, vec![101], 151.0), false)],
    ));
    let e = a
        .entries
        .iter()
        .find(|e| e.family == "work_duration_seconds");
    assert_eq!(
        e.map(|e| (e.pending.clone(), e.pending_count)),
        Some((
            Weighted {
                values: vec![(m0, 1)],
                sum: 1.0
            },
            1
        ))
    );
}

#[test]
fn exponential_points_out_of_bounds_are_refused() {
    let mut a = Aggregator::new(&config(100));
    let r = vec![kv("service.name", "api")];
    let out = a.export(&request(
        r.clone(),
        vec![
            exp(exp_point(0, 21, 0, vec![1], 1.0), true),
            exp(exp_point(0, 0, 0, vec![1; MAX_EXP_BUCKETS + 1], 1.0), true),
            exp(exp_point(0, 0, i32::MAX, vec![1, 1], 1.0), true),
        ],
    ));
    // The third is taken: its top bucket's value is capped, not overflowed.
    assert_eq!((out.accepted, out.rejected), (1, 2));
    let out = a.export(&request(
        r,
        vec![exp(exp_point(0, 0, 0, vec![MAX_WINDOW_SAMPLES], 1.0), true)],
    ));
    assert_eq!(out.rejected, 1);
    assert_eq!(a.counts().rejected[Reject::WindowFull.index()], 1);
}

#[test]
fn limits_and_reserved_names_refuse_points_and_say_so() {
    let mut a = Aggregator::new(&config(3));
    let points: Vec<NumberDataPoint> = (0..10)
        .map(|i| point(1.0, vec![kv("n", &i.to_string())]))
        .collect();
    let out = a.export(&request(
        vec![kv("service.name", "api")],
        vec![
            metric(
                "node.load1",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![point(9.0, vec![])],
                }),
            ),
            metric("hits", "", sum(points, true, true)),
            metric(
                "hits",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![point(1.0, vec![])],
                }),
            ),
        ],
    ));
    assert_eq!(out.accepted, 3);
    // `hits` the gauge is a new family (`hits`, not `hits_total`) over the limit.
    assert_eq!(out.rejected, 1 + 7 + 1);
    assert_eq!(out.message, "node_load1: reserved_name");
    assert_eq!(a.counts().rejected[Reject::MaxSeries.index()], 8);
    assert_eq!(a.counts().rejected[Reject::ReservedName.index()], 1);
    assert_eq!(a.series(), 3);
    // `process_` is the agent's own only without a service name.
    let mut a = Aggregator::new(&config(10));
    let g = || {
        metric(
            "process.threads",
            "",
            Data::Gauge(Gauge {
                data_points: vec![point(4.0, vec![])],
            }),
        )
    };
    assert_eq!(a.export(&request(vec![], vec![g()])).rejected, 1);
    assert_eq!(
        a.export(&request(vec![kv("service.name", "api")], vec![g()]))
            .accepted,
        1
    );
}

#[test]
fn record_moves_series_into_windows_and_forgets_stale_ones() -> anyhow::Result<()> {
    let mut c = config(100);
    c.stale_after = Duration::from_millis(50);
    let mut a = Aggregator::new(&c);
    let r = vec![kv("service.name", "api")];
    a.export(&request(
        r.clone(),
        vec![
            metric("hits", "", sum(vec![point(3.0, vec![])], true, true)),
            exp(exp_point(0, 0, 0, vec![2, 1], 7.0), true),
        ],
    ));
    let mut w = Windows::new("host-1", "node", 1000)?;
    w.begin_sample(1_000);
    assert_eq!(a.record(&mut w), 0);
    let families = w.close()?;
    let hits = families
        .iter()
        .find(|f| f.name == "hits_total")
        .ok_or_else(|| anyhow::anyhow!("no hits"))?;
    let names: Vec<(&str, &str)> = hits.series[0]
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(names, [("instance", "host-1"), ("job", "api")]);
    assert_eq!(hits.series[0].value, 3.0);
    let window = families
        .iter()
        .find(|f| f.name == "work_duration_seconds")
        .and_then(|f| f.series[0].window.clone())
        .ok_or_else(|| anyhow::anyhow!("no window"))?;
    assert_eq!((window.count, window.sum), (3, 7.0));
    std::thread::sleep(Duration::from_millis(80));
    w.begin_sample(2_000);
    a.record(&mut w);
    assert_eq!(a.series(), 0);
    Ok(())
}

#[test]
fn exponential_buckets_are_kept_within_the_points_minimum_and_maximum() {
    let mut a = Aggregator::new(&config(100));
    let mut p = exp_point(0, 0, 0, vec![2, 1], 4.5);
    p.min = Some(1.2);
    p.max = Some(2.1);
    a.export(&request(
        vec![kv("service.name", "api")],
        vec![exp(p, true)],
    ));
    let e = a
        .entries
        .iter()
        .find(|e| e.family == "work_duration_seconds");
    // Middles 2^0.5 = 1.41 (inside) and 2^1.5 = 2.83 (above the maximum).
    assert_eq!(
        e.map(|e| e.pending.values.clone()),
        Some(vec![(0.5f64.exp2(), 2), (2.1, 1)])
    );
}

#[test]
fn series_over_the_agents_own_limit_are_refused_and_counted() -> anyhow::Result<()> {
    let mut a = Aggregator::new(&config(100));
    let points: Vec<NumberDataPoint> = (0..5)
        .map(|i| point(1.0, vec![kv("n", &i.to_string())]))
        .collect();
    a.export(&request(
        vec![kv("service.name", "api")],
        vec![metric("hits", "", sum(points, true, true))],
    ));
    // The agent's windows hold two series in all.
    let mut w = Windows::new("host-1", "node", 2)?;
    w.begin_sample(1_000);
    assert_eq!(a.record(&mut w), 3);
    assert_eq!(w.series_count(), 2);
    assert_eq!(a.logged.len(), 1, "the name is logged once");
    Ok(())
}

//! A Go template, parsed and expanded with alert data and a `query`
//! function that answers every query with two samples.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use vigil_template::{QuerySample, Template, TemplateData};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = Template::parse(text) else {
        return;
    };
    let data = TemplateData {
        labels: BTreeMap::from([("instance".to_string(), "web-1".to_string())]),
        value: 3.5,
        ..TemplateData::default()
    };
    let query = |_: &str| {
        Ok(vec![
            QuerySample {
                labels: BTreeMap::from([("a".to_string(), "1".to_string())]),
                value: 1.0,
            },
            QuerySample {
                labels: BTreeMap::new(),
                value: f64::NAN,
            },
        ])
    };
    let _ = template.render(&data, Some(&query));
    let _ = template.render_json(
        &serde_json::json!({"receiver": "r", "alerts": [{"labels": {"a": "b"}}]}),
    );
});

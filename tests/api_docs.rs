//! The admin API's answers are exactly what the README documents: each
//! example (marked `<!-- api-example: Type -->`) parses into its typed model
//! and serializes back byte for byte, and every model has an example. The
//! models are what the server sends (admin::dispatch serializes them with
//! `serde_json::to_vec_pretty`), so the README cannot drift from the wire.

use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard::model::api::{
    ClusterView, ErrorBody, EventsReply, MatchReply, ReloadReply, RemovedReply, RolloutStatus,
    StateView, StatsView, VersionReply, WeightsReply,
};

/// `(type name, JSON text)` of every example in the README.
fn examples() -> Vec<(String, String)> {
    let readme = include_str!("../README.md");
    let mut out = Vec::new();
    let mut rest = readme;
    while let Some(i) = rest.find("<!-- api-example: ") {
        rest = &rest[i + "<!-- api-example: ".len()..];
        let name = rest[..rest.find(" -->").unwrap()].to_string();
        let start = rest.find("```json\n").unwrap() + "```json\n".len();
        let end = start + rest[start..].find("\n```").unwrap();
        out.push((name, rest[start..end].to_string()));
        rest = &rest[end..];
    }
    out
}

fn round_trip<T: Serialize + DeserializeOwned>(name: &str, text: &str) {
    let typed: T = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("README example {name} does not parse as {name}: {e}"));
    let again = serde_json::to_string_pretty(&typed).unwrap();
    assert_eq!(
        again, text,
        "README example {name} differs from what the API sends (left: the wire)"
    );
}

#[test]
fn every_documented_answer_is_byte_for_byte_its_model() {
    let found = examples();
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "StateView",
        "WeightsReply",
        "VersionReply",
        "RemovedReply",
        "ReloadReply",
        "EventsReply",
        "StatsView",
        "RolloutStatus",
        "ErrorBody",
        "MatchReply",
        "ClusterView",
    ] {
        assert!(names.contains(&want), "the README has no example of {want}");
    }
    for (name, text) in &found {
        match name.as_str() {
            "StateView" => round_trip::<StateView>(name, text),
            "ClusterView" => round_trip::<ClusterView>(name, text),
            "WeightsReply" => round_trip::<WeightsReply>(name, text),
            "VersionReply" => round_trip::<VersionReply>(name, text),
            "RemovedReply" => round_trip::<RemovedReply>(name, text),
            "ReloadReply" => round_trip::<ReloadReply>(name, text),
            "EventsReply" => round_trip::<EventsReply>(name, text),
            "StatsView" => round_trip::<StatsView>(name, text),
            "RolloutStatus" => round_trip::<RolloutStatus>(name, text),
            "ErrorBody" => round_trip::<ErrorBody>(name, text),
            "MatchReply" => round_trip::<MatchReply>(name, text),
            other => panic!("README example of an unknown model {other}"),
        }
    }
}

#[test]
fn an_example_that_drifts_is_caught() {
    // A renamed field, and a reordered one, both fail the round trip.
    let renamed = r#"{
  "pool": "app",
  "weight": {}
}"#;
    assert!(serde_json::from_str::<WeightsReply>(renamed).is_err());
    let reordered = "{\n  \"weights\": {},\n  \"pool\": \"app\"\n}";
    let typed: WeightsReply = serde_json::from_str(reordered).unwrap();
    assert_ne!(serde_json::to_string_pretty(&typed).unwrap(), reordered);
}

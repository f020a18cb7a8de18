//! What a notification says: the body of one audit event for a
//! `[[notify]]` target, as JSON or as a Slack incoming-webhook message.
//! Pure: no I/O.

use serde_json::{json, Value};

use crate::config::NotifyFormat;
use crate::model::event::{Event, EventKind};

/// The dotted name under which `e` is notified, or `None` when it is not
/// something `[[notify]]` sends (notifications about notifications, passing
/// judgements, ...).
pub fn notified_as(e: &Event) -> Option<&'static str> {
    use EventKind::*;
    match e.kind {
        RolloutStart | RolloutStep | RolloutPause | RolloutApproval | RolloutPromoted
        | RolloutRolledBack | HealthDown | HealthUp | Weights => Some(e.kind.as_str()),
        RolloutJudgement if e.after["verdict"] == "fail" => Some(e.kind.as_str()),
        _ => None,
    }
}

/// One line for humans: `[app] rollout.rolled_back: green rolled back ...`.
pub fn summary(e: &Event) -> String {
    match &e.pool {
        Some(p) => format!("[{p}] {}: {}", e.kind, e.what),
        None => format!("{}: {}", e.kind, e.what),
    }
}

/// The request body for `format`.
pub fn body(format: NotifyFormat, e: &Event) -> Vec<u8> {
    let v = match format {
        NotifyFormat::Json => json!({
            "source": "switchyard",
            "text": summary(e),
            "event": e,
        }),
        NotifyFormat::Slack => slack(e),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// A Slack incoming-webhook message: `text` (mrkdwn) is all Slack,
/// Mattermost and Discord's `/slack` endpoint need.
fn slack(e: &Event) -> Value {
    let icon = match e.kind {
        EventKind::RolloutStart => ":rocket:",
        EventKind::RolloutStep => ":arrow_forward:",
        EventKind::RolloutJudgement => ":warning:",
        EventKind::RolloutPause => ":double_vertical_bar:",
        EventKind::RolloutPromoted => ":white_check_mark:",
        EventKind::RolloutRolledBack => ":rotating_light:",
        EventKind::HealthDown => ":red_circle:",
        EventKind::HealthUp => ":large_green_circle:",
        _ => ":information_source:",
    };
    let pool = e
        .pool
        .as_deref()
        .map(|p| format!(" pool `{}`", escape(p)))
        .unwrap_or_default();
    json!({
        "text": format!(
            "{icon} *switchyard*{pool} `{}` by {}: {}",
            e.kind,
            escape(&e.who),
            escape(&e.what)
        ),
    })
}

/// Slack's three control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, after: Value) -> Event {
        Event {
            seq: 7,
            time: "2026-12-04T15:02:11.412Z".into(),
            who: "rollout".into(),
            instance: None,
            kind,
            pool: Some("app".into()),
            what: "green rolled back in app, weights back to blue=100 green=0: p99 <a & b>".into(),
            before: Value::Null,
            after,
        }
    }

    #[test]
    fn which_events_are_notified() {
        let e = |k| event(k, Value::Null);
        assert_eq!(
            notified_as(&e(EventKind::RolloutRolledBack)),
            Some("rollout.rolled_back")
        );
        assert_eq!(notified_as(&e(EventKind::Weights)), Some("weights"));
        assert_eq!(notified_as(&e(EventKind::NotifyFailed)), None);
        assert_eq!(notified_as(&e(EventKind::Reload)), None);
        let pass = event(EventKind::RolloutJudgement, json!({"verdict": "pass"}));
        let fail = event(EventKind::RolloutJudgement, json!({"verdict": "fail"}));
        assert_eq!(notified_as(&pass), None);
        assert_eq!(notified_as(&fail), Some("rollout.judgement"));
        // Every name a config may ask for is one that can be notified.
        for name in crate::config::NOTIFY_EVENTS {
            let kind: EventKind = serde_json::from_value(json!(name)).unwrap();
            assert_ne!(kind, EventKind::Unknown, "{name}");
            let e = event(kind, json!({"verdict": "fail"}));
            assert_eq!(notified_as(&e), Some(*name));
        }
    }

    #[test]
    fn bodies() {
        let e = event(EventKind::RolloutRolledBack, Value::Null);
        let v: Value = serde_json::from_slice(&body(NotifyFormat::Json, &e)).unwrap();
        assert_eq!(v["event"]["kind"], "rollout.rolled_back");
        assert_eq!(v["event"]["seq"], 7);
        assert!(v["text"]
            .as_str()
            .unwrap()
            .starts_with("[app] rollout.rolled_back: "));
        let v: Value = serde_json::from_slice(&body(NotifyFormat::Slack, &e)).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(
            text.starts_with(":rotating_light: *switchyard* pool `app`"),
            "{text}"
        );
        assert!(text.contains("&lt;a &amp; b&gt;"), "{text}");
        assert_eq!(v.as_object().unwrap().len(), 1);
    }
}

//! `[[notify]]`: where audit events are sent as webhooks (JSON or Slack).
//! The file model, the validated model and its validation.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::file::S;
use super::validate::Checker;

/// The audit event kinds a `[[notify]]` entry may ask for, and what it gets
/// without `events`. `rollout.judgement` sends failed judgements only.
pub const NOTIFY_EVENTS: &[&str] = &[
    "rollout.start",
    "rollout.step",
    "rollout.judgement",
    "rollout.pause",
    "rollout.waiting_approval",
    "rollout.promoted",
    "rollout.rolled_back",
    "health.down",
    "health.up",
    "weights",
];

/// Longest notification URL accepted.
const MAX_URL: usize = 2048;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifyFile {
    url: Spanned<String>,
    events: S<Vec<Spanned<String>>>,
    format: S<String>,
    ca_file: S<String>,
}

/// One notification target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotifyConfig {
    /// An `http://` or `https://` URL (a Slack webhook's is a secret: logs
    /// and events show only its scheme and host).
    pub url: String,
    /// Event kinds sent (dotted names, from [`NOTIFY_EVENTS`]).
    pub events: Vec<String>,
    pub format: NotifyFormat,
    /// Extra roots to trust for an `https://` target (a private CA).
    pub ca_file: Option<PathBuf>,
}

/// The body sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyFormat {
    /// The audit event as JSON, plus a one-line `text`.
    Json,
    /// A Slack incoming-webhook body (`{"text": ...}`), which Mattermost and
    /// Discord's Slack-compatible endpoint also take.
    Slack,
}

// === impl NotifyConfig ===

impl NotifyConfig {
    /// The URL without its path and query (which, for Slack and most
    /// webhook services, is the secret): for logs and events.
    pub fn target(&self) -> String {
        redact(&self.url)
    }

    /// Whether this target wants events of `kind` (a dotted name).
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == kind)
    }
}

/// `scheme://host[:port]/…` of a URL.
pub fn redact(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => format!(
            "{}://{}/…",
            u.scheme_str().unwrap_or("?"),
            u.authority().map(|a| a.as_str()).unwrap_or("?")
        ),
        Err(_) => "(bad url)".into(),
    }
}

/// Validates the `[[notify]]` entries.
pub(super) fn validate(
    c: &mut Checker<'_>,
    entries: &[Spanned<NotifyFile>],
    base: &Path,
) -> Vec<NotifyConfig> {
    entries
        .iter()
        .filter_map(|n| validate_one(c, n.get_ref(), base))
        .collect()
}

fn validate_one(c: &mut Checker<'_>, n: &NotifyFile, base: &Path) -> Option<NotifyConfig> {
    let url = n.url.get_ref();
    let ok_url = url.len() <= MAX_URL
        && url.parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty())
        });
    if !ok_url {
        c.err(
            n.url.span(),
            "notify.url must be an http:// or https:// URL with a host",
        );
    }
    let mut events = Vec::new();
    match &n.events {
        None => events.extend(NOTIFY_EVENTS.iter().map(|e| e.to_string())),
        Some(list) => {
            for e in list.get_ref() {
                if NOTIFY_EVENTS.contains(&e.get_ref().as_str()) {
                    events.push(e.get_ref().clone());
                } else {
                    c.err(
                        e.span(),
                        format!(
                            "notify.events: unknown event {:?}; one of {}",
                            e.get_ref(),
                            NOTIFY_EVENTS.join(", ")
                        ),
                    );
                }
            }
        }
    }
    let format = match n.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("json", _)) => NotifyFormat::Json,
        Some(("slack", _)) => NotifyFormat::Slack,
        Some((_, span)) => {
            c.err(span, "notify.format must be \"json\" or \"slack\"");
            NotifyFormat::Json
        }
    };
    let ca_file = n
        .ca_file
        .as_ref()
        .map(|p| super::validate::resolve(base, p.get_ref()));
    ok_url.then(|| NotifyConfig {
        url: url.clone(),
        events,
        format,
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    #[test]
    fn entries_are_validated_with_positions() {
        let c = Config::from_toml_str(
            r#"
[[notify]]
url = "https://hooks.slack.com/services/T0/B0/secret"
format = "slack"
events = ["rollout.rolled_back", "health.down"]

[[notify]]
url = "http://127.0.0.1:9000/hook"
"#,
        )
        .unwrap();
        assert_eq!(c.notify.len(), 2);
        assert_eq!(c.notify[0].format, NotifyFormat::Slack);
        assert!(c.notify[0].wants("health.down") && !c.notify[0].wants("weights"));
        assert_eq!(c.notify[0].target(), "https://hooks.slack.com/…");
        assert_eq!(c.notify[1].format, NotifyFormat::Json);
        assert_eq!(c.notify[1].events.len(), NOTIFY_EVENTS.len());

        let errs = Config::from_toml_str(
            "[[notify]]\nurl = \"ftp://x\"\nevents = [\"weights\", \"rollout.nope\"]\nformat = \"xml\"\n",
        )
        .unwrap_err();
        let at: Vec<(usize, usize)> = errs.iter().map(|d| (d.line, d.col)).collect();
        assert_eq!(at, [(2, 7), (3, 22), (4, 10)], "{errs:?}");
        assert!(Config::from_toml_str("[[notify]]\nurl = \"http://x\"\nspeed = 1\n").is_err());
    }
}

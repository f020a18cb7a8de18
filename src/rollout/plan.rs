//! Rollout plans: the pool's `[rollout]` defaults, a preset, and the
//! request's overrides, checked into one [`Plan`]. Pure.

use std::time::Duration;

use crate::config::{
    check_step_items, parse_duration, RolloutConfig, SmokeConfig, StepItem, StepList, CONFIDENCE,
};
use crate::model::api::{RolloutRequest, StepSpec};
use crate::model::rollout::{default_status, Plan};
use crate::model::AdminError;

fn bad(m: impl Into<String>) -> AdminError {
    AdminError::BadRequest(m.into())
}

/// The plan from the pool's `[rollout]` defaults, a preset and the request's
/// overrides. Refuses anything that is not a sensible plan.
pub fn plan_from(defaults: &RolloutConfig, req: &RolloutRequest) -> Result<Plan, AdminError> {
    let (list, preset) = steps_of(defaults, req)?;
    let step_duration = duration(
        req.step_duration.as_deref(),
        "step_duration",
        defaults.step_duration,
    )?;
    if step_duration < Duration::from_millis(100) {
        return Err(bad("step_duration must be at least 100ms"));
    }
    let (smoke_path, smoke_status, webhook) = gates_of(defaults, req)?;
    let p99_tolerance = match req.p99_tolerance.as_deref().map(str::trim) {
        Some("0") | Some("0s") => Duration::ZERO,
        other => duration(other, "p99_tolerance", defaults.p99_tolerance)?,
    };
    let (confidence, min_success_rate, max_p99_ms) = gates(defaults, req)?;
    Ok(Plan {
        steps: list.percents,
        step_durations: list
            .durations
            .iter()
            .map(|d| d.map(|d| d.as_millis() as u64))
            .collect(),
        approve_before: list.approve_before,
        confidence,
        min_success_rate,
        max_p99_ms,
        step_duration,
        min_requests: req.min_requests.unwrap_or(defaults.min_requests),
        max_error_rate_increase: fraction(
            req.max_error_rate_increase,
            "max_error_rate_increase",
            defaults.max_error_rate_increase,
            1.0,
        )?,
        max_p99_increase: fraction(
            req.max_p99_increase,
            "max_p99_increase",
            defaults.max_p99_increase,
            1000.0,
        )?,
        p99_tolerance,
        failure_limit: match req.failure_limit {
            None => defaults.failure_limit,
            Some(n) if (1..=u64::from(u32::MAX)).contains(&n) => n as u32,
            Some(_) => return Err(bad("failure_limit must be a whole number >= 1")),
        },
        cooldown: duration(req.cooldown.as_deref(), "cooldown", defaults.cooldown)?,
        smoke_path,
        smoke_status,
        webhook,
        preset,
    })
}

/// Steps from the defaults, a preset, or the request; 100 always ends them.
/// Approvals come with the steps they were written in, plus
/// `approve_before` (the request's, else the defaults').
fn steps_of(
    defaults: &RolloutConfig,
    req: &RolloutRequest,
) -> Result<(StepList, Option<String>), AdminError> {
    let mut list = StepList {
        percents: defaults.steps.clone(),
        durations: defaults.step_durations.clone(),
        approve_before: defaults.approve_before.clone(),
    };
    let mut preset = None;
    if let Some(name) = &req.preset {
        let percents = preset_steps(name).ok_or_else(|| {
            bad(format!(
                "unknown preset {name:?} (canary-10, linear-10, all-at-once)"
            ))
        })?;
        list = StepList {
            durations: vec![None; percents.len()],
            percents,
            approve_before: Vec::new(),
        };
        preset = Some(name.clone());
    }
    if let Some(specs) = &req.steps {
        let items = specs.iter().map(step_item).collect::<Result<Vec<_>, _>>()?;
        list = check_step_items(&items).map_err(bad)?;
    }
    if req.steps.is_some() || req.preset.is_some() {
        // The defaults' approve_before still holds when its step is there.
        for p in &defaults.approve_before {
            if list.percents.contains(p) || *p == 100 {
                list.approve_before.push(*p);
            }
        }
    }
    if let Some(p) = req.approve_before {
        list.approve_before.push(p);
    }
    if list.percents.last() != Some(&100) {
        list.percents.push(100);
    }
    list.durations.resize(list.percents.len(), None);
    list.approve_before.sort_unstable();
    list.approve_before.dedup();
    for p in &list.approve_before {
        if !list.percents.contains(p) {
            return Err(bad(format!(
                "approve_before {p} is not one of the steps {:?}",
                list.percents
            )));
        }
        if list.percents.first() == Some(p) {
            return Err(bad(format!(
                "approve_before {p} is the first step: start the rollout when it is approved"
            )));
        }
    }
    Ok((list, preset))
}

fn step_item(s: &StepSpec) -> Result<StepItem, AdminError> {
    Ok(match s {
        StepSpec::Percent(p) => StepItem::Percent(*p),
        StepSpec::Word(w) if w.trim().eq_ignore_ascii_case("pause") => StepItem::Pause,
        StepSpec::Word(w) => {
            return Err(bad(format!(
                "step {w:?} is neither a percentage nor \"pause\""
            )))
        }
        StepSpec::Timed { percent, duration } => {
            let d = match duration.as_deref() {
                None => None,
                Some(d) => Some(parse_duration(d).map_err(|e| bad(format!("step duration: {e}")))?),
            };
            if d.is_some_and(|d| d < Duration::from_millis(100)) {
                return Err(bad("a step's duration must be at least 100ms"));
            }
            StepItem::Timed(*percent, d)
        }
    })
}

/// `confidence`, `min_success_rate` and `max_p99` (ms).
fn gates(
    defaults: &RolloutConfig,
    req: &RolloutRequest,
) -> Result<(f64, Option<f64>, Option<u64>), AdminError> {
    let confidence = match req.confidence {
        None => defaults.confidence,
        Some(c) if CONFIDENCE.contains(&c) => c,
        Some(_) => {
            return Err(bad(
                "confidence must be at least 0.5 and below 1 (e.g. 0.99)",
            ))
        }
    };
    let min_success_rate = match req.min_success_rate {
        None => defaults.min_success_rate,
        Some(x) if (0.0..=1.0).contains(&x) => Some(x),
        Some(_) => return Err(bad("min_success_rate must be between 0 and 1 (e.g. 0.99)")),
    };
    let max_p99 = match req.max_p99.as_deref() {
        None => defaults.max_p99,
        Some(s) => match parse_duration(s) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => return Err(bad("max_p99 must be above zero")),
            Err(e) => return Err(bad(format!("max_p99: {e}"))),
        },
    };
    Ok((
        confidence,
        min_success_rate,
        max_p99.map(|d| d.as_millis() as u64),
    ))
}

type Gates = (Option<String>, (u16, u16), Option<String>);

/// The smoke path, its accepted statuses and the webhook.
fn gates_of(defaults: &RolloutConfig, req: &RolloutRequest) -> Result<Gates, AdminError> {
    let (mut path, mut status, mut webhook) = match &defaults.smoke {
        Some(SmokeConfig {
            path,
            status,
            webhook,
        }) => (Some(path.clone()), *status, webhook.clone()),
        None => (None, default_status(), None),
    };
    if let Some(s) = &req.smoke {
        if !s.path.starts_with('/') {
            return Err(bad("smoke.path must start with '/'"));
        }
        path = Some(s.path.clone());
        if let Some(st) = s.status {
            status = (st, st);
        }
    }
    if let Some(w) = &req.webhook {
        webhook = Some(w.clone());
    }
    if let Some(w) = &webhook {
        check_webhook(w).map_err(bad)?;
    }
    Ok((path, status, webhook))
}

fn duration(v: Option<&str>, key: &str, default: Duration) -> Result<Duration, AdminError> {
    match v {
        None => Ok(default),
        Some(s) => parse_duration(s).map_err(|e| bad(format!("{key}: {e}"))),
    }
}

fn fraction(v: Option<f64>, key: &str, default: f64, max: f64) -> Result<f64, AdminError> {
    match v {
        None => Ok(default),
        Some(x) if (0.0..=max).contains(&x) => Ok(x),
        Some(_) => Err(bad(format!("{key} must be a number between 0 and {max}"))),
    }
}

/// Named plans, as AWS CodeDeploy names them.
pub fn preset_steps(name: &str) -> Option<Vec<u32>> {
    match name {
        "canary-10" => Some(vec![10, 100]),
        "linear-10" => Some((1..=10).map(|i| i * 10).collect()),
        "all-at-once" => Some(vec![100]),
        _ => None,
    }
}

/// A webhook must be plain HTTP on loopback (the gate runs next to the proxy).
pub fn check_webhook(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| "webhook must be an http:// URL on loopback".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("webhook must be an http:// URL on loopback".into());
    }
    let host = uri.host().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if loopback {
        Ok(())
    } else {
        Err("webhook must be on loopback (127.0.0.1, [::1] or localhost)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> Result<RolloutRequest, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn plans_from_defaults_presets_and_overrides() {
        use serde_json::json;
        let d = RolloutConfig::default();
        let p = plan_from(&d, &req(json!({"canary": "g"})).unwrap()).unwrap();
        assert_eq!(p.steps, vec![1, 5, 25, 100]);
        let steps = |v| plan_from(&d, &req(v).unwrap()).unwrap().steps;
        assert_eq!(steps(json!({"preset": "canary-10"})), vec![10, 100]);
        assert_eq!(steps(json!({"preset": "linear-10"})).len(), 10);
        assert_eq!(steps(json!({"preset": "all-at-once"})), vec![100]);
        let p = plan_from(
            &d,
            &req(json!({"steps": [10, 50], "step_duration": "2s", "min_requests": 5})).unwrap(),
        )
        .unwrap();
        assert_eq!(p.steps, vec![10, 50, 100], "100 is always the last step");
        assert_eq!(p.step_duration, Duration::from_secs(2));
        for bad in [
            json!({"steps": [50, 10]}),
            json!({"steps": [10, 150]}),
            json!({"steps": [0]}),
            json!({"preset": "yolo"}),
            json!({"step_duration": "soon"}),
            json!({"step_duration": "10ms"}),
            json!({"max_error_rate_increase": 2}),
            json!({"failure_limit": 0}),
            json!({"webhook": "http://example.com/hook"}),
            json!({"webhook": "https://127.0.0.1/hook"}),
            json!({"smoke": {"path": "health"}}),
        ] {
            assert!(plan_from(&d, &req(bad.clone()).unwrap()).is_err(), "{bad}");
        }
        // Wrong types and unknown fields are refused by the typed request.
        for bad in [json!({"steps": "1,2"}), json!({"surprise": 1})] {
            assert!(req(bad.clone()).is_err(), "{bad}");
        }
        for ok in [
            "http://127.0.0.1:9/gate",
            "http://localhost:9/",
            "http://[::1]:9/x",
        ] {
            let r = req(json!({ "webhook": ok })).unwrap();
            assert!(plan_from(&d, &r).is_ok(), "{ok}");
        }
    }
}

//! Fault schedules for `caplab workload --cluster`: faults are injected by editing the
//! RegisterCluster's `spec.faults` at the scheduled times (the operator does the rest) and
//! removed again when their window closes; the windows go to an events file that
//! `caplab report --events` shades.
//!
//! On the command line: `--fault-at START:FAULT[:DURATION]`, e.g. `10s:partition-leader:20s`.
//! FAULT is `KIND-TARGET[=VALUE]`: KIND is partition, crash (or kill), pause, delay, loss or
//! skew (or clockSkew); TARGET is leader (primary), followers (secondaries) or a member ordinal; VALUE is the
//! delay's latency in ms (default 50: below the Raft heartbeat, which openraft 0.9 also uses
//! as its replication deadline, so Raft slows down rather than loses the member), the loss
//! probability (default 0.5) or the clock offset in ms (default 5000). Without DURATION the
//! fault lasts to the end of the workload.
//!
//! In a YAML file (`--faults FILE`), a list (or `{faults: [...]}`) of
//! `{at: 10s, duration: 20s, fault: partition-leader}` where `fault` may also be a mapping in
//! the shape of a `spec.faults` entry (`{kind: crash, targets: [leader]}`; `name` optional).

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// From the start of the workload.
    pub at: Duration,
    /// `None`: until the workload ends.
    pub duration: Option<Duration>,
    /// A `spec.faults` entry without its name.
    pub fault: Map<String, Value>,
    /// How the schedule named it, for the report.
    pub label: String,
}

/// `10s`, `500ms`, `1.5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| anyhow!("{text:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| anyhow!("{text:?} is not a non-negative duration"))
}

fn target(text: &str) -> Result<Value> {
    Ok(match text {
        "leader" | "primary" => json!("leader"),
        "followers" | "secondaries" => json!("followers"),
        other => match other.parse::<u32>() {
            Ok(o) => json!(o),
            Err(_) => bail!("unknown target {other:?}: use leader, followers or a member ordinal"),
        },
    })
}

/// `partition-leader`, `crash-1`, `delay-followers=300`, … as a `spec.faults` entry.
pub fn preset(text: &str) -> Result<Map<String, Value>> {
    let (head, value) = match text.split_once('=') {
        Some((h, v)) => (h, Some(v)),
        None => (text, None),
    };
    let (kind, who) = head
        .split_once('-')
        .ok_or_else(|| anyhow!("{text:?}: expected KIND-TARGET, e.g. partition-leader"))?;
    let who = target(who).with_context(|| format!("in {text:?}"))?;
    let number = |default: f64| -> Result<f64> {
        match value {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| anyhow!("{text:?}: {v:?} is not a number")),
        }
    };
    let no_value = || -> Result<()> {
        match value {
            None => Ok(()),
            Some(_) => bail!("{text:?}: {kind} takes no =VALUE"),
        }
    };
    let fault = match kind {
        "partition" => {
            no_value()?;
            let rest = if who == json!("leader") {
                json!("followers")
            } else {
                json!("others")
            };
            json!({"kind": "partition", "groups": [[who], [rest]]})
        }
        "crash" | "kill" => {
            no_value()?;
            json!({"kind": "crash", "targets": [who]})
        }
        "pause" => {
            no_value()?;
            json!({"kind": "pause", "targets": [who]})
        }
        "delay" => {
            let ms = number(50.0)?;
            if ms < 0.0 {
                bail!("{text:?}: the latency must not be negative");
            }
            json!({"kind": "delay", "targets": [who], "latencyMs": ms.round() as u64})
        }
        "loss" => {
            let p = number(0.5)?;
            if !(0.0..=1.0).contains(&p) {
                bail!("{text:?}: the probability must be in [0, 1]");
            }
            json!({"kind": "loss", "targets": [who], "probability": p})
        }
        "skew" | "clockSkew" => {
            let ms = number(5000.0)?;
            json!({"kind": "clockSkew", "targets": [who], "offsetMs": ms.round() as i64})
        }
        other => bail!(
            "{text:?}: unknown fault kind {other:?} (partition, crash, pause, delay, loss, skew; \
             other kinds such as veto only as a mapping in --faults FILE)"
        ),
    };
    match fault {
        Value::Object(map) => Ok(map),
        other => bail!("internal: {other} is not an object"),
    }
}

/// `START:FAULT[:DURATION]`, e.g. `10s:partition-leader:20s`.
pub fn parse_fault_at(text: &str) -> Result<Scheduled> {
    let parts: Vec<&str> = text.split(':').collect();
    let (at, fault, duration) = match parts.as_slice() {
        [at, fault] => (at, fault, None),
        [at, fault, duration] => (at, fault, Some(duration)),
        _ => bail!(
            "--fault-at {text:?}: expected START:FAULT[:DURATION], e.g. 10s:partition-leader:20s"
        ),
    };
    let at = parse_duration(at).with_context(|| format!("--fault-at {text:?}"))?;
    let duration = duration
        .map(|d| parse_duration(d))
        .transpose()
        .with_context(|| format!("--fault-at {text:?}"))?;
    if duration == Some(Duration::ZERO) {
        bail!("--fault-at {text:?}: the duration must be positive");
    }
    Ok(Scheduled {
        at,
        duration,
        fault: preset(fault).with_context(|| format!("--fault-at {text:?}"))?,
        label: fault.to_string(),
    })
}

fn yaml_duration(v: &Value, what: &str) -> Result<Duration> {
    match v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) => n
            .as_f64()
            .and_then(|x| Duration::try_from_secs_f64(x).ok())
            .ok_or_else(|| anyhow!("{what}: {n} is not a non-negative number of seconds")),
        other => bail!("{what}: expected a duration such as 10s, got {other}"),
    }
}

/// A YAML (or JSON) schedule; see the module documentation.
pub fn parse_schedule(text: &str) -> Result<Vec<Scheduled>> {
    let doc: Value = serde_yaml::from_str(text).context("the schedule is not YAML")?;
    let items = match &doc {
        Value::Array(items) => items.as_slice(),
        Value::Object(m) => match m.get("faults") {
            Some(Value::Array(items)) => items.as_slice(),
            _ => bail!("expected a list of faults, or a mapping with a `faults` list"),
        },
        Value::Null => &[],
        _ => bail!("expected a list of faults"),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_item(item).with_context(|| format!("schedule entry {}", i + 1)))
        .collect()
}

fn parse_item(item: &Value) -> Result<Scheduled> {
    let Value::Object(m) = item else {
        bail!("expected a mapping with at and fault");
    };
    for key in m.keys() {
        if !["at", "duration", "for", "fault"].contains(&key.as_str()) {
            bail!("unknown field {key:?} (at, duration, fault)");
        }
    }
    let at = yaml_duration(m.get("at").ok_or_else(|| anyhow!("missing `at`"))?, "at")?;
    let duration = match m.get("duration").or_else(|| m.get("for")) {
        None | Some(Value::Null) => None,
        Some(d) => Some(yaml_duration(d, "duration")?),
    };
    if duration == Some(Duration::ZERO) {
        bail!("duration: must be positive");
    }
    let (fault, label) = match m.get("fault") {
        Some(Value::String(s)) => (preset(s)?, s.clone()),
        Some(Value::Object(f)) => {
            let kind = f
                .get("kind")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("fault: missing `kind`"))?;
            let label = f
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| kind.to_string(), str::to_string);
            let mut f = f.clone();
            f.remove("name");
            (f, label)
        }
        Some(other) => {
            bail!("fault: expected a name such as partition-leader or a mapping, got {other}")
        }
        None => bail!("missing `fault`"),
    };
    Ok(Scheduled {
        at,
        duration,
        fault,
        label,
    })
}

/// Checks the member ordinals the schedule names against the cluster's `replicas`, before
/// anything starts (the operator would refuse them, after the workload began).
pub fn check_ordinals(schedule: &[Scheduled], replicas: u32) -> Result<()> {
    for s in schedule {
        let targets = s.fault.get("targets").into_iter();
        let groups = s
            .fault
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let ordinals = targets
            .chain(groups)
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_u64);
        for o in ordinals {
            if o >= u64::from(replicas) {
                bail!(
                    "fault {}: member ordinal {o} does not exist: the cluster has {replicas} \
                     member(s), ordinals 0 to {}",
                    s.label,
                    replicas.saturating_sub(1)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_are_checked_against_the_cluster_size() {
        let schedule = |text: &str| vec![parse_fault_at(text).expect("valid")];
        assert!(check_ordinals(&schedule("1s:crash-2:2s"), 3).is_ok());
        assert!(check_ordinals(&schedule("1s:crash-leader:2s"), 1).is_ok());
        let e = check_ordinals(&schedule("1s:crash-7:2s"), 3).expect_err("out of range");
        assert_eq!(
            e.to_string(),
            "fault crash-7: member ordinal 7 does not exist: the cluster has 3 member(s), \
             ordinals 0 to 2"
        );
        assert!(check_ordinals(&schedule("1s:partition-3"), 3).is_err());
        let yaml = parse_schedule("- {at: 1s, fault: {kind: partition, groups: [[0], [1, 5]]}}")
            .expect("valid");
        assert!(check_ordinals(&yaml, 3).is_err());
        assert!(check_ordinals(&yaml, 6).is_ok());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("7").ok(), Some(Duration::from_secs(7)));
        for bad in ["", "s", "-1s", "ten", "1x", "NaNs", "infs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn fault_at() {
        let s = parse_fault_at("10s:partition-leader:20s").expect("valid");
        assert_eq!(s.at, Duration::from_secs(10));
        assert_eq!(s.duration, Some(Duration::from_secs(20)));
        assert_eq!(
            Value::Object(s.fault),
            json!({"kind": "partition", "groups": [["leader"], ["followers"]]})
        );
        assert_eq!(s.label, "partition-leader");

        let s = parse_fault_at("1.5s:crash-2").expect("valid");
        assert_eq!(s.duration, None);
        assert_eq!(
            Value::Object(s.fault),
            json!({"kind": "crash", "targets": [2]})
        );

        let fault = |t: &str| parse_fault_at(t).map(|s| Value::Object(s.fault)).ok();
        assert_eq!(
            fault("0s:partition-1:5s"),
            Some(json!({"kind": "partition", "groups": [[1], ["others"]]}))
        );
        assert_eq!(
            fault("0:kill-primary:1m"),
            Some(json!({"kind": "crash", "targets": ["leader"]}))
        );
        assert_eq!(
            fault("0:pause-followers:1"),
            Some(json!({"kind": "pause", "targets": ["followers"]}))
        );
        assert_eq!(
            fault("0:delay-leader=300:1"),
            Some(json!({"kind": "delay", "targets": ["leader"], "latencyMs": 300}))
        );
        assert_eq!(
            fault("0:delay-0:1"),
            Some(json!({"kind": "delay", "targets": [0], "latencyMs": 50}))
        );
        assert_eq!(
            fault("0:loss-secondaries=0.25:1"),
            Some(json!({"kind": "loss", "targets": ["followers"], "probability": 0.25}))
        );
        assert_eq!(
            fault("0:skew-1=-2000:1"),
            Some(json!({"kind": "clockSkew", "targets": [1], "offsetMs": -2000}))
        );
        for bad in [
            "",
            "10s",
            "10s:partition-leader:20s:x",
            "x:partition-leader",
            "10s:partition",
            "10s:partition-everyone",
            "10s:explode-leader",
            "10s:crash-leader=3",
            "10s:loss-leader=2",
            "10s:delay-leader=-5",
            "10s:delay-leader=abc",
            "10s:crash-leader:0s",
        ] {
            assert!(parse_fault_at(bad).is_err(), "{bad:?} accepted");
        }
        // Errors name what was wrong.
        let e = parse_fault_at("10s:explode-leader").expect_err("invalid");
        assert!(format!("{e:#}").contains("explode"), "{e:#}");
    }

    #[test]
    fn yaml_schedules() {
        let text = r#"
faults:
  - at: 10s
    duration: 20s
    fault: partition-leader
  - at: 40
    fault:
      name: slow
      kind: delay
      targets: [followers]
      latencyMs: 50
      jitterMs: 10
"#;
        let s = parse_schedule(text).expect("valid");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].at, Duration::from_secs(10));
        assert_eq!(s[0].duration, Some(Duration::from_secs(20)));
        assert_eq!(s[1].at, Duration::from_secs(40));
        assert_eq!(s[1].duration, None);
        assert_eq!(s[1].label, "slow");
        assert_eq!(
            Value::Object(s[1].fault.clone()),
            json!({"kind": "delay", "targets": ["followers"], "latencyMs": 50, "jitterMs": 10})
        );
        // A bare list works too, and an empty file is an empty schedule.
        let bare = parse_schedule("- {at: 1s, for: 2s, fault: crash-leader}").expect("valid");
        assert_eq!(bare[0].duration, Some(Duration::from_secs(2)));
        assert!(parse_schedule("").expect("empty").is_empty());
        for (bad, needle) in [
            ("- {fault: crash-leader}", "missing `at`"),
            ("- {at: 1s}", "missing `fault`"),
            ("- {at: 1s, fault: {targets: [1]}}", "kind"),
            ("- {at: 1s, fault: crash-leader, when: now}", "when"),
            ("- {at: soon, fault: crash-leader}", "soon"),
            ("- {at: 1s, fault: melt-leader}", "melt"),
            ("- {at: 1s, fault: 3}", "fault"),
            ("x: 1", "faults"),
            ("[unclosed", "YAML"),
        ] {
            let e = parse_schedule(bad).expect_err(bad);
            let message = format!("{e:#}");
            assert!(message.contains(needle), "{bad:?}: {message}");
        }
        let e = parse_schedule("- {at: 1s, fault: crash-leader}\n- {at: x, fault: crash-leader}")
            .expect_err("second entry is bad");
        assert!(format!("{e:#}").contains("entry 2"), "{e:#}");
    }
}

//! Change windows (`spec.windows` of convoy.yaml): times when new revisions may or may not
//! reach an environment's clusters, e.g. no prod changes from Friday 18:00 to Monday 09:00.
//!
//! Decisions:
//! - A window opens at each time its five-field cron `schedule` names, in its `timeZone` (IANA
//!   names; default UTC; the zone database handles daylight saving: a local time skipped by the
//!   change opens at the first time after it), and stays open for `duration` (absolute time).
//! - A window covers the environments and apps it lists (each default: all).
//! - An app of an environment is *held* while a `deny` window covering it is open, or while
//!   `allow` windows cover it and none of them is open. It is held until the first time neither
//!   is true: the end of the deny windows (chained when they overlap) or the next opening of an
//!   allow window, whichever comes last, looking up to a year ahead.
//! - The clock is a parameter: the hub passes the current time, tests pass any.

use std::str::FromStr as _;

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};

/// How far ahead a hold's end is looked for.
const HORIZON_MS: i64 = 366 * 24 * 3600 * 1000;
/// Overlapping openings followed to find where an open window closes.
const CHAIN: usize = 64;

/// Whether a window lets changes through or stops them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// New revisions go out only while an allow window covering them is open.
    Allow,
    /// No new revisions while it is open.
    Deny,
}

/// One entry of `spec.windows`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowSpec {
    pub name: String,
    pub kind: Kind,
    /// When it opens: a five-field cron expression (minute hour day-of-month month
    /// day-of-week), e.g. `0 18 * * 5` for Fridays at 18:00.
    pub schedule: String,
    /// How long it stays open, e.g. `63h` or `30m`.
    pub duration: String,
    /// The IANA time zone the schedule is read in (e.g. `Europe/Berlin`); default UTC.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The environments it covers; empty: every one.
    #[serde(default)]
    pub environments: Vec<String>,
    /// The apps it covers; empty: every one.
    #[serde(default)]
    pub apps: Vec<String>,
}

/// A window, parsed.
#[derive(Debug, Clone)]
struct Window {
    spec: WindowSpec,
    cron: Cron,
    zone: Tz,
    duration_ms: i64,
}

impl Window {
    fn covers(&self, environment: &str, app: &str) -> bool {
        let listed = |names: &[String], name: &str| names.is_empty() || names.iter().any(|n| n == name);
        listed(&self.spec.environments, environment) && listed(&self.spec.apps, app)
    }

    fn local(&self, at_ms: i64) -> DateTime<Tz> {
        Utc.timestamp_millis_opt(at_ms).single().unwrap_or_default().with_timezone(&self.zone)
    }

    /// When the window open at `at_ms` closes (following openings that begin before it
    /// closes), or `None` when it is not open then.
    fn open_until(&self, at_ms: i64) -> Option<i64> {
        let mut start = self.cron.find_previous_occurrence(&self.local(at_ms), true).ok()?.timestamp_millis();
        let mut end = start + self.duration_ms;
        if end <= at_ms {
            return None;
        }
        // Openings that begin before it closes keep it open (bounded: a window that never
        // closes is reported open until the horizon, or as far as [`CHAIN`] openings reach).
        for _ in 0..CHAIN {
            let Ok(next) = self.cron.find_next_occurrence(&self.local(start), false) else { break };
            let next = next.timestamp_millis();
            if next > end || end > at_ms + HORIZON_MS {
                break;
            }
            start = next;
            end = end.max(next + self.duration_ms);
        }
        Some(end)
    }

    /// The next time it opens after `at_ms`.
    fn next_opening(&self, at_ms: i64) -> Option<i64> {
        self.cron.find_next_occurrence(&self.local(at_ms), false).ok().map(|t| t.timestamp_millis())
    }
}

/// Why and until when an app of an environment is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The deny window that is open, or the allow window that opens next.
    pub window: String,
    pub kind: Kind,
    /// When new revisions may go out again (Unix milliseconds).
    pub until_ms: i64,
}

/// Every window of the fleet.
#[derive(Debug, Clone, Default)]
pub struct Windows(Vec<Window>);

impl PartialEq for Windows {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| a.spec == b.spec)
    }
}

/// Parses `text` as a duration: a number and a unit (`s`, `m`, `h`, `d`), or several (`1h30m`).
fn duration_ms(text: &str) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(format!("'{text}' is not a duration (use e.g. 30m, 10h or 2d)")),
        };
        let n: i64 = number.parse().map_err(|_| format!("'{text}' is not a duration (use e.g. 30m, 10h or 2d)"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() || total <= 0 {
        return Err(format!("'{text}' is not a positive duration with a unit (use e.g. 30m, 10h or 2d)"));
    }
    Ok(total)
}

impl Windows {
    /// Parses `specs`, naming the entry and what is wrong; `environments` are the fleet's.
    pub fn new(specs: Vec<WindowSpec>, environments: &[&str]) -> Result<Windows, String> {
        let mut windows = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for spec in specs {
            let at = format!("spec.windows '{}'", spec.name);
            if spec.name.is_empty() || !names.insert(spec.name.clone()) {
                return Err(format!("{at}: every window needs a name of its own"));
            }
            let parser = CronParser::builder().seconds(Seconds::Disallowed).build();
            let cron = parser
                .parse(&spec.schedule)
                .map_err(|e| format!("{at}: schedule '{}' is not a five-field cron expression: {e}", spec.schedule))?;
            let zone_name = spec.time_zone.as_deref().unwrap_or("UTC");
            let zone = Tz::from_str(zone_name)
                .map_err(|_| format!("{at}: timeZone '{zone_name}' is not an IANA time zone (e.g. Europe/Berlin)"))?;
            let duration_ms = duration_ms(&spec.duration).map_err(|e| format!("{at}: duration {e}"))?;
            if let Some(unknown) = spec.environments.iter().find(|e| !environments.contains(&e.as_str())) {
                return Err(format!("{at}: environment '{unknown}' is not one of {}", environments.join(", ")));
            }
            windows.push(Window { spec, cron, zone, duration_ms });
        }
        Ok(Windows(windows))
    }

    /// Whether there are any.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `app` of `environment` is held at `now_ms`, and until when.
    pub fn hold(&self, environment: &str, app: &str, now_ms: i64) -> Option<Hold> {
        let covering: Vec<&Window> = self.0.iter().filter(|w| w.covers(environment, app)).collect();
        if covering.is_empty() {
            return None;
        }
        let allows: Vec<&&Window> = covering.iter().filter(|w| w.spec.kind == Kind::Allow).collect();
        let mut first: Option<(String, Kind)> = None;
        let mut at = now_ms;
        // Each turn moves `at` past a deny window or to an allow window's opening.
        for _ in 0..64 {
            let denied = covering
                .iter()
                .filter(|w| w.spec.kind == Kind::Deny)
                .filter_map(|w| w.open_until(at).map(|end| (end, *w)))
                .max_by_key(|(end, _)| *end);
            if let Some((end, window)) = denied {
                first.get_or_insert((window.spec.name.clone(), Kind::Deny));
                at = end;
                continue;
            }
            if allows.is_empty() || allows.iter().any(|w| w.open_until(at).is_some()) {
                break;
            }
            let Some((opens, window)) =
                allows.iter().filter_map(|w| w.next_opening(at).map(|t| (t, w))).min_by_key(|(t, _)| *t)
            else {
                break;
            };
            first.get_or_insert((window.spec.name.clone(), Kind::Allow));
            at = opens;
            if at > now_ms + HORIZON_MS {
                break;
            }
        }
        first.map(|(window, kind)| Hold { window, kind, until_ms: at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC time.
    fn utc(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    fn window(name: &str, kind: Kind, schedule: &str, duration: &str, envs: &[&str], apps: &[&str]) -> WindowSpec {
        WindowSpec {
            name: name.into(),
            kind,
            schedule: schedule.into(),
            duration: duration.into(),
            time_zone: Some("Europe/Berlin".into()),
            environments: envs.iter().map(|e| e.to_string()).collect(),
            apps: apps.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn windows(specs: Vec<WindowSpec>) -> Windows {
        Windows::new(specs, &["dev", "stage", "prod"]).unwrap()
    }

    #[test]
    fn the_weekend_freeze_holds_prod_from_friday_evening_to_monday_morning_in_berlin() {
        let w = windows(vec![window("weekend", Kind::Deny, "0 18 * * 5", "63h", &["prod"], &[])]);
        // Friday 2026-12-04 18:00 in Berlin is 17:00 UTC (winter time).
        assert_eq!(w.hold("prod", "web", utc("2026-12-04T16:59:00Z")), None, "Friday afternoon");
        let held = w.hold("prod", "web", utc("2026-12-04T17:00:00Z")).expect("Friday 18:00");
        assert_eq!(held, Hold { window: "weekend".into(), kind: Kind::Deny, until_ms: utc("2026-12-07T08:00:00Z") });
        assert_eq!(w.hold("prod", "web", utc("2026-12-06T12:00:00Z")).unwrap().until_ms, utc("2026-12-07T08:00:00Z"));
        assert_eq!(w.hold("prod", "web", utc("2026-12-07T08:00:00Z")), None, "Monday 09:00 in Berlin");
        assert_eq!(w.hold("stage", "web", utc("2026-12-05T12:00:00Z")), None, "other environments go on");
    }

    #[test]
    fn daylight_saving_moves_the_window_with_the_local_clock() {
        // Summer time starts on Sunday 2027-03-28 at 02:00 in Berlin: a window opening at 01:00
        // local every day is 00:00 UTC before and 23:00 UTC (the day before) after.
        let w = windows(vec![window("night", Kind::Deny, "0 1 * * *", "1h", &[], &[])]);
        assert_eq!(w.hold("dev", "a", utc("2027-03-27T00:30:00Z")).unwrap().until_ms, utc("2027-03-27T01:00:00Z"));
        assert_eq!(w.hold("dev", "a", utc("2027-03-28T23:30:00Z")).unwrap().until_ms, utc("2027-03-29T00:00:00Z"));
        assert_eq!(w.hold("dev", "a", utc("2027-03-29T00:30:00Z")), None, "01:30 summer time is after it");
        // A local time the change skips (02:30 on that Sunday) opens at the first time after it.
        let skipped = windows(vec![window("skip", Kind::Deny, "30 2 * * *", "10m", &[], &[])]);
        let held = skipped.hold("dev", "a", utc("2027-03-28T01:05:00Z"));
        assert!(held.is_some(), "03:05 summer time, just after the skipped 02:30: {held:?}");
    }

    #[test]
    fn outside_every_allow_window_an_app_waits_for_the_next_one_and_only_the_apps_it_names() {
        let office = window("office", Kind::Allow, "0 8 * * 1-5", "10h", &["prod"], &["web"]);
        let w = windows(vec![office]);
        // Monday 2026-12-07 07:00 UTC is 08:00 in Berlin: open until 18:00 Berlin.
        assert_eq!(w.hold("prod", "web", utc("2026-12-07T10:00:00Z")), None, "inside office hours");
        let night = w.hold("prod", "web", utc("2026-12-07T20:00:00Z")).unwrap();
        assert_eq!(night, Hold { window: "office".into(), kind: Kind::Allow, until_ms: utc("2026-12-08T07:00:00Z") });
        let saturday = w.hold("prod", "web", utc("2026-12-12T10:00:00Z")).unwrap();
        assert_eq!(saturday.until_ms, utc("2026-12-14T07:00:00Z"), "the weekend waits for Monday");
        assert_eq!(w.hold("prod", "api", utc("2026-12-07T20:00:00Z")), None, "an app it does not name");
    }

    #[test]
    fn a_deny_window_inside_an_allow_window_holds_until_both_allow() {
        let office = window("office", Kind::Allow, "0 8 * * 1-5", "10h", &["prod"], &[]);
        let lunch = window("lunch", Kind::Deny, "0 12 * * *", "1h", &["prod"], &[]);
        let overlap = window("incident", Kind::Deny, "30 12 * * *", "1h", &["prod"], &[]);
        let w = windows(vec![office, lunch, overlap]);
        // Monday 12:10 Berlin: lunch, then the incident window chained, then office hours still.
        let held = w.hold("prod", "web", utc("2026-12-07T11:10:00Z")).unwrap();
        assert_eq!(held, Hold { window: "lunch".into(), kind: Kind::Deny, until_ms: utc("2026-12-07T12:30:00Z") });
        // Friday 17:30 Berlin: a freeze ending after office hours waits for Monday's.
        let late = window("late", Kind::Deny, "30 17 * * 5", "1h", &["prod"], &[]);
        let w = windows(vec![window("office", Kind::Allow, "0 8 * * 1-5", "10h", &["prod"], &[]), late]);
        let held = w.hold("prod", "web", utc("2026-12-11T16:45:00Z")).unwrap();
        assert_eq!((held.window.as_str(), held.until_ms), ("late", utc("2026-12-14T07:00:00Z")));
    }

    #[test]
    fn a_window_whose_openings_overlap_stays_open_as_long_as_they_chain() {
        // Every minute for an hour: open without end; reported open up to the openings followed.
        let w = windows(vec![window("always", Kind::Deny, "* * * * *", "1h", &[], &[])]);
        let now = utc("2026-12-07T10:00:30Z");
        let held = w.hold("dev", "a", now).unwrap();
        assert!(held.until_ms > now + 3_600_000, "{held:?}");
        // Every six hours for eight: chained across the day.
        let w = windows(vec![window("overlap", Kind::Deny, "0 */6 * * *", "8h", &[], &[])]);
        let held = w.hold("dev", "a", utc("2026-12-07T10:00:00Z")).unwrap();
        assert!(held.until_ms > utc("2026-12-07T10:00:00Z") + 24 * 3_600_000, "{held:?}");
    }

    #[test]
    fn a_window_that_does_not_parse_says_which_and_why() {
        let bad = |spec: WindowSpec| Windows::new(vec![spec], &["dev", "prod"]).unwrap_err();
        let base = window("w", Kind::Deny, "0 18 * * 5", "63h", &["prod"], &[]);
        assert!(bad(WindowSpec { schedule: "0 18 * *".into(), ..base.clone() }).contains("five-field cron"));
        assert!(bad(WindowSpec { schedule: "0 0 18 * * 5".into(), ..base.clone() }).contains("five-field cron"));
        assert!(bad(WindowSpec { duration: "63".into(), ..base.clone() }).contains("duration"));
        assert!(bad(WindowSpec { duration: "0h".into(), ..base.clone() }).contains("duration"));
        let zone = bad(WindowSpec { time_zone: Some("Mars/Olympus".into()), ..base.clone() });
        assert!(zone.contains("'Mars/Olympus' is not an IANA time zone"), "{zone}");
        let env = bad(WindowSpec { environments: vec!["qa".into()], ..base.clone() });
        assert_eq!(env, "spec.windows 'w': environment 'qa' is not one of dev, prod");
        let twice = Windows::new(vec![base.clone(), base], &["prod"]).unwrap_err();
        assert!(twice.contains("a name of its own"), "{twice}");
        assert_eq!(duration_ms("1h30m"), Ok(5_400_000));
    }
}

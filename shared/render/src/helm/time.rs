//! Go's `time.Time` as templates see it: `now`, Sprig's `date` family, the `.Format`, `.Unix`
//! and `.Year` methods, and Go's reference-layout formatting (UTC only).

use super::value::{GoObject, Value};

/// A `time.Time`: seconds and nanoseconds since the epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoTime {
    /// Whole seconds since the epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl GoTime {
    /// The current time.
    pub fn now() -> GoTime {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        GoTime { secs: d.as_secs() as i64, nanos: d.subsec_nanos() }
    }

    /// The time inside `v`, if it holds one.
    pub fn of(v: &Value) -> Option<GoTime> {
        match v {
            Value::Obj(o) => (o.as_ref() as &dyn std::any::Any).downcast_ref::<GoTime>().copied(),
            _ => None,
        }
    }

    /// Formatted with a Go layout.
    pub fn format(&self, layout: &str) -> String {
        format_time(self.secs, self.nanos, layout)
    }
}

impl GoObject for GoTime {
    fn type_name(&self) -> &'static str {
        "time.Time"
    }

    fn write_go(&self, out: &mut String) {
        out.push_str(&self.format("2006-01-02 15:04:05.999999999 -0700 MST"));
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::String(self.format("2006-01-02T15:04:05.999999999Z07:00"))
    }

    fn field(&self, name: &str, args: Vec<Value>, _has_args: bool) -> Result<Value, String> {
        match name {
            "Unix" => Ok(Value::Int64(self.secs)),
            "Format" => Ok(Value::str(self.format(args.first().and_then(Value::as_str).unwrap_or("")))),
            "Year" => Ok(Value::Int(format_time(self.secs, 0, "2006").parse().unwrap_or(0))),
            _ => Err(format!("can't evaluate field {name} in type time.Time")),
        }
    }
}

/// Formats seconds/nanos since the epoch (UTC) with a Go layout.
pub fn format_time(secs: i64, nanos: u32, layout: &str) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, mi, se) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let wd = (days + 4).rem_euclid(7);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
    let tokens: [(&str, String); 26] = [
        ("2006", format!("{y:04}")),
        ("January", MONTHS[(m - 1) as usize].to_string()),
        ("Jan", MONTHS[(m - 1) as usize][..3].to_string()),
        ("Monday", DAYS[wd as usize].to_string()),
        ("Mon", DAYS[wd as usize][..3].to_string()),
        ("MST", "UTC".to_string()),
        ("Z07:00", "Z".to_string()),
        ("-07:00", "+00:00".to_string()),
        ("-0700", "+0000".to_string()),
        (".999999999", {
            let f = format!(".{nanos:09}");
            let t = f.trim_end_matches('0');
            if t == "." { String::new() } else { t.to_string() }
        }),
        (".000000", format!(".{:06}", nanos / 1000)),
        (".000", format!(".{:03}", nanos / 1_000_000)),
        ("01", format!("{m:02}")),
        ("02", format!("{d:02}")),
        ("15", format!("{h:02}")),
        ("03", format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })),
        ("04", format!("{mi:02}")),
        ("05", format!("{se:02}")),
        ("06", format!("{:02}", y % 100)),
        ("PM", if h >= 12 { "PM" } else { "AM" }.to_string()),
        ("_2", format!("{d:>2}")),
        ("1", m.to_string()),
        ("2", d.to_string()),
        ("3", (if h % 12 == 0 { 12 } else { h % 12 }).to_string()),
        ("4", mi.to_string()),
        ("5", se.to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in &tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Sprig's `date`: a time, or seconds since the epoch, with a Go layout; anything else is now.
pub fn format_time_value(v: &Value, layout: &str) -> String {
    match (v, GoTime::of(v)) {
        (_, Some(t)) => t.format(layout),
        (Value::Obj(_), None) => String::new(),
        (Value::Int(i) | Value::Int64(i), None) => format_time(*i, 0, layout),
        (Value::Float(f), None) => format_time(*f as i64, 0, layout),
        _ => GoTime::now().format(layout),
    }
}

//! Semantic versions and constraints with Masterminds/semver v3 rules (`semverCompare`,
//! `semver`, dependency version ranges).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::value::Value;

/// A parsed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
    /// Pre-release (after `-`).
    pub pre: String,
    /// Build metadata (after `+`).
    pub meta: String,
    original: String,
}

impl Version {
    /// Parses leniently (`v` prefix, missing minor/patch), like `semver.NewVersion`.
    pub fn parse(s: &str) -> Option<Version> {
        let (v, _) = parse_loose(s, false)?;
        Some(v)
    }

    /// As a template value with the fields charts read.
    pub fn to_value(&self) -> Value {
        let mut m = BTreeMap::new();
        m.insert("Major".into(), Value::Int64(self.major as i64));
        m.insert("Minor".into(), Value::Int64(self.minor as i64));
        m.insert("Patch".into(), Value::Int64(self.patch as i64));
        m.insert("Prerelease".into(), Value::str(self.pre.as_str()));
        m.insert("Metadata".into(), Value::str(self.meta.as_str()));
        m.insert("Original".into(), Value::str(self.original.as_str()));
        Value::map(m)
    }

    /// Semver precedence (build metadata ignored), the order Helm picks the highest
    /// matching version by.
    pub fn precedence(&self, o: &Version) -> Ordering {
        self.major
            .cmp(&o.major)
            .then(self.minor.cmp(&o.minor))
            .then(self.patch.cmp(&o.patch))
            .then_with(|| cmp_pre(&self.pre, &o.pre))
    }
}

fn cmp_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for (x, y) in pa.iter().zip(pb.iter()) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// Parses a version; with `wild`, `x`/`X`/`*`/missing parts are wildcards, reported as
/// (minor dirty, patch dirty).
fn parse_loose(s: &str, wild: bool) -> Option<(Version, (bool, bool))> {
    let original = s.to_string();
    let s = s.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    let (s, meta) = match s.split_once('+') {
        Some((a, b)) => (a, b.to_string()),
        None => (s, String::new()),
    };
    let (core, pre) = match s.split_once('-') {
        Some((a, b)) => (a, b.to_string()),
        None => (s, String::new()),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || parts[0].is_empty() {
        return None;
    }
    let is_wild = |p: &str| wild && matches!(p, "x" | "X" | "*");
    let num = |p: &str| -> Option<u64> {
        if p.len() > 1 && p.starts_with('0') {
            return None;
        }
        p.parse().ok()
    };
    let major = if is_wild(parts[0]) { 0 } else { num(parts[0])? };
    let mut minor_dirty = is_wild(parts[0]);
    let mut patch_dirty = minor_dirty;
    let minor = match parts.get(1) {
        Some(p) if is_wild(p) => {
            minor_dirty = true;
            patch_dirty = true;
            0
        }
        Some(p) => num(p)?,
        None => {
            if wild {
                minor_dirty = true;
                patch_dirty = true;
            }
            0
        }
    };
    let patch = match parts.get(2) {
        Some(p) if is_wild(p) => {
            patch_dirty = true;
            0
        }
        Some(p) => num(p)?,
        None => {
            if wild {
                patch_dirty = true;
            }
            0
        }
    };
    Some((Version { major, minor, patch, pre, meta, original }, (minor_dirty, patch_dirty)))
}

struct Constraint {
    op: String,
    con: Version,
    minor_dirty: bool,
    patch_dirty: bool,
    dirty: bool,
}

fn parse_constraint(s: &str) -> Result<Constraint, String> {
    let s = s.trim();
    let ops = ["!=", ">=", "=>", "<=", "=<", "~>", ">", "<", "=", "~", "^"];
    let mut op = "";
    for o in ops {
        if let Some(_rest) = s.strip_prefix(o) {
            op = o;
            break;
        }
    }
    let ver = s[op.len()..].trim();
    if matches!(ver, "*" | "x" | "X") {
        // Any version at all.
        let any =
            Version { major: 0, minor: 0, patch: 0, pre: String::new(), meta: String::new(), original: ver.into() };
        return Ok(Constraint { op: ">=".into(), con: any, minor_dirty: true, patch_dirty: true, dirty: true });
    }
    let (con, (minor_dirty, patch_dirty)) =
        parse_loose(ver, true).ok_or_else(|| format!("improper constraint: {s}"))?;
    let op = match op {
        "=>" => ">=",
        "=<" => "<=",
        "~>" => "~",
        o => o,
    };
    Ok(Constraint { op: op.to_string(), con, minor_dirty, patch_dirty, dirty: minor_dirty || patch_dirty })
}

fn check(c: &Constraint, v: &Version) -> bool {
    if !v.pre.is_empty() && c.con.pre.is_empty() {
        return false;
    }
    let cmp = v.precedence(&c.con);
    match c.op.as_str() {
        "" | "=" => {
            if c.dirty {
                if v.major != c.con.major {
                    return false;
                }
                if !c.minor_dirty && v.minor != c.con.minor {
                    return false;
                }
                true
            } else {
                cmp == Ordering::Equal
            }
        }
        "!=" => {
            if c.dirty {
                if v.major != c.con.major {
                    return true;
                }
                if !c.minor_dirty && v.minor != c.con.minor {
                    return true;
                }
                false
            } else {
                cmp != Ordering::Equal
            }
        }
        ">" => {
            if !c.dirty {
                return cmp == Ordering::Greater;
            }
            if v.major != c.con.major {
                return v.major > c.con.major;
            }
            if c.minor_dirty {
                return false;
            }
            if c.patch_dirty {
                return v.minor > c.con.minor;
            }
            cmp == Ordering::Greater
        }
        "<" => cmp == Ordering::Less,
        ">=" => cmp != Ordering::Less,
        "<=" => {
            if !c.dirty {
                return cmp != Ordering::Greater;
            }
            if v.major != c.con.major {
                return v.major < c.con.major;
            }
            if c.minor_dirty {
                return true;
            }
            if c.patch_dirty {
                return v.minor <= c.con.minor;
            }
            cmp != Ordering::Greater
        }
        "~" => {
            if cmp == Ordering::Less {
                return false;
            }
            if c.con.major == 0 && c.con.minor == 0 && c.con.patch == 0 && !c.minor_dirty && !c.patch_dirty {
                return v.major == 0 && v.minor == 0;
            }
            if v.major != c.con.major {
                return false;
            }
            if v.minor != c.con.minor && !c.minor_dirty {
                return false;
            }
            true
        }
        "^" => {
            if cmp == Ordering::Less {
                return false;
            }
            if c.con.major > 0 || c.minor_dirty {
                return v.major == c.con.major;
            }
            if v.major > 0 {
                return false;
            }
            if c.con.minor > 0 || c.patch_dirty {
                return v.minor == c.con.minor;
            }
            if v.minor > 0 {
                return false;
            }
            c.con.patch == v.patch
        }
        _ => false,
    }
}

/// Whether `version` satisfies `constraint` (`||` of `,`/space-separated ANDs, hyphen
/// ranges).
pub fn compare(constraint: &str, version: &str) -> Result<bool, String> {
    let v = Version::parse(version).ok_or_else(|| "Invalid Semantic Version".to_string())?;
    check_str(constraint, &v)
}

/// Like [`compare`] for a parsed version.
pub fn check_str(constraint: &str, v: &Version) -> Result<bool, String> {
    for group in constraint.split("||") {
        let group = group.trim();
        // Hyphen ranges: "1.2 - 1.4".
        let mut parts: Vec<String> = Vec::new();
        let toks: Vec<&str> = group.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()).collect();
        let mut i = 0;
        while i < toks.len() {
            if i + 2 < toks.len() && toks[i + 1] == "-" {
                parts.push(format!(">={}", toks[i]));
                parts.push(format!("<={}", toks[i + 2]));
                i += 3;
                continue;
            }
            // An operator separated from its version by a space.
            if matches!(toks[i], ">" | "<" | ">=" | "<=" | "=" | "!=" | "~" | "^" | "=>" | "=<" | "~>")
                && i + 1 < toks.len()
            {
                parts.push(format!("{}{}", toks[i], toks[i + 1]));
                i += 2;
                continue;
            }
            parts.push(toks[i].to_string());
            i += 1;
        }
        if parts.is_empty() {
            parts.push("*".into());
        }
        let mut ok = true;
        for p in &parts {
            let c = parse_constraint(p)?;
            if !check(&c, v) {
                ok = false;
                break;
            }
        }
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraints() {
        assert!(compare(">=1.19-0", "v1.36.0").unwrap());
        assert!(!compare(">=1.19", "v1.20.0-gke.1").unwrap());
        assert!(compare(">=1.19-0", "v1.20.0-gke.1").unwrap());
        assert!(compare("^1.2.3", "1.9.0").unwrap());
        assert!(!compare("^1.2.3", "2.0.0").unwrap());
        assert!(compare("~1.2.3", "1.2.9").unwrap());
        assert!(!compare("~1.2.3", "1.3.0").unwrap());
        assert!(compare("1.2.x", "1.2.7").unwrap());
        assert!(compare("<1.25.0 || >=2", "2.1.0").unwrap());
        assert!(compare(">= 1.2, < 1.4", "1.3.0").unwrap());
        assert!(compare("1.1 - 1.3", "1.2.0").unwrap());
        assert!(compare("*", "3.0.0").unwrap());
        assert!(compare("", "3.0.0").unwrap());
    }
}

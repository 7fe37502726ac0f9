//! Helm's built-in objects that carry methods: `.Files`, `.Capabilities` (with
//! `KubeVersion` and `APIVersions.Has`), and time values from `now`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::value::{GoObject, Value};

/// An object with methods or a custom printed form.
#[derive(Debug)]
pub enum Object {
    /// `.Files`: chart files other than templates, by path.
    Files(Arc<BTreeMap<String, Arc<[u8]>>>),
    /// `.Capabilities`.
    Capabilities(Arc<Capabilities>),
    /// `.Capabilities.KubeVersion`.
    KubeVersion(Arc<Capabilities>),
    /// `.Capabilities.APIVersions`.
    ApiVersions(Arc<Capabilities>),
    /// `.Capabilities.HelmVersion`.
    HelmVersion,
}

/// What a chart may ask about the target cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// `v1.36.0`.
    pub kube_version: String,
    /// API group/versions (and `group/version/Kind`) the cluster serves.
    pub api_versions: Vec<String>,
}

/// The API versions Helm v4 assumes without a cluster (`chartutil.DefaultVersionSet`).
pub const DEFAULT_API_VERSIONS: &[&str] = &[
    "v1",
    "admissionregistration.k8s.io/v1",
    "admissionregistration.k8s.io/v1alpha1",
    "admissionregistration.k8s.io/v1beta1",
    "internal.apiserver.k8s.io/v1alpha1",
    "apps/v1",
    "apps/v1beta1",
    "apps/v1beta2",
    "authentication.k8s.io/v1",
    "authentication.k8s.io/v1alpha1",
    "authentication.k8s.io/v1beta1",
    "authorization.k8s.io/v1",
    "authorization.k8s.io/v1beta1",
    "autoscaling/v1",
    "autoscaling/v2",
    "batch/v1",
    "batch/v1beta1",
    "certificates.k8s.io/v1",
    "certificates.k8s.io/v1beta1",
    "certificates.k8s.io/v1alpha1",
    "coordination.k8s.io/v1alpha2",
    "coordination.k8s.io/v1beta1",
    "coordination.k8s.io/v1",
    "discovery.k8s.io/v1",
    "discovery.k8s.io/v1beta1",
    "events.k8s.io/v1",
    "events.k8s.io/v1beta1",
    "extensions/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1",
    "flowcontrol.apiserver.k8s.io/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1beta2",
    "flowcontrol.apiserver.k8s.io/v1beta3",
    "networking.k8s.io/v1",
    "networking.k8s.io/v1beta1",
    "node.k8s.io/v1",
    "node.k8s.io/v1alpha1",
    "node.k8s.io/v1beta1",
    "policy/v1",
    "policy/v1beta1",
    "rbac.authorization.k8s.io/v1",
    "rbac.authorization.k8s.io/v1beta1",
    "rbac.authorization.k8s.io/v1alpha1",
    "resource.k8s.io/v1",
    "resource.k8s.io/v1beta2",
    "resource.k8s.io/v1beta1",
    "resource.k8s.io/v1alpha3",
    "scheduling.k8s.io/v1alpha2",
    "scheduling.k8s.io/v1beta1",
    "scheduling.k8s.io/v1",
    "storage.k8s.io/v1beta1",
    "storage.k8s.io/v1",
    "storage.k8s.io/v1alpha1",
    "storagemigration.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1",
];

/// The Kubernetes version Helm v4.2 assumes without a cluster.
pub const DEFAULT_KUBE_VERSION: &str = "v1.36.0";

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            kube_version: DEFAULT_KUBE_VERSION.into(),
            api_versions: DEFAULT_API_VERSIONS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Capabilities {
    /// Helm's defaults, built once and shared: a fleet's renders all start from them, and
    /// 60-odd API versions copied per render add up.
    pub fn shared_default() -> Arc<Capabilities> {
        static DEFAULT: std::sync::LazyLock<Arc<Capabilities>> = std::sync::LazyLock::new(Default::default);
        Arc::clone(&DEFAULT)
    }

    fn major_minor(&self) -> (String, String) {
        let v = self.kube_version.trim_start_matches('v');
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or("").to_string();
        let minor = parts.next().unwrap_or("").to_string();
        (major, minor)
    }
}

fn obj(o: Object) -> Value {
    Value::Obj(std::rc::Rc::new(o))
}

impl GoObject for Object {
    /// Go's type name.
    fn type_name(&self) -> &'static str {
        match self {
            Object::Files(_) => "engine.files",
            Object::Capabilities(_) => "*common.Capabilities",
            Object::KubeVersion(_) => "common.KubeVersion",
            Object::ApiVersions(_) => "common.VersionSet",
            Object::HelmVersion => "version.BuildInfo",
        }
    }

    /// Go's kind name.
    fn kind_name(&self) -> &'static str {
        match self {
            Object::Files(_) => "map",
            Object::Capabilities(_) => "ptr",
            Object::ApiVersions(_) => "slice",
            _ => "struct",
        }
    }

    /// Items when ranged over.
    fn range_items(&self) -> Option<Vec<(Value, Value)>> {
        match self {
            Object::Files(f) => Some(
                f.iter()
                    .map(|(k, v)| {
                        (Value::str(k.as_str()), Value::list(v.iter().map(|b| Value::Int(i64::from(*b))).collect()))
                    })
                    .collect(),
            ),
            Object::ApiVersions(c) => Some(
                c.api_versions
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (Value::Int(i as i64), Value::str(s.as_str())))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Writes Go's `%v`.
    fn write_go(&self, out: &mut String) {
        match self {
            Object::KubeVersion(c) => out.push_str(&c.kube_version),
            Object::ApiVersions(c) => {
                out.push('[');
                out.push_str(&c.api_versions.join(" "));
                out.push(']');
            }
            Object::HelmVersion => out.push_str("{v4.2   go1.26.6 v1.36}"),
            Object::Capabilities(c) => {
                let (ma, mi) = c.major_minor();
                out.push_str(&format!(
                    "{{{{{} {} {} {}}} [{}] {{v4.2   go1.26.6 v1.36}}}}",
                    c.kube_version,
                    c.kube_version,
                    ma,
                    mi,
                    c.api_versions.join(" ")
                ));
            }
            Object::Files(f) => {
                out.push_str("map[");
                let mut first = true;
                for (k, v) in f.iter() {
                    if !first {
                        out.push(' ');
                    }
                    first = false;
                    out.push_str(k);
                    out.push_str(":[");
                    out.push_str(&v.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" "));
                    out.push(']');
                }
                out.push(']');
            }
        }
    }

    /// JSON form.
    fn to_json(&self) -> serde_json::Value {
        match self {
            Object::KubeVersion(c) => {
                let (ma, mi) = c.major_minor();
                serde_json::json!({"Version": c.kube_version, "Major": ma, "Minor": mi})
            }
            Object::ApiVersions(c) => serde_json::json!(c.api_versions),
            Object::Files(f) => serde_json::Value::Object(
                f.iter()
                    .map(|(k, v)| {
                        use base64::Engine as _;
                        (k.clone(), serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(v)))
                    })
                    .collect(),
            ),
            Object::Capabilities(c) => serde_json::json!({
                "KubeVersion": Object::KubeVersion(c.clone()).to_json(),
                "APIVersions": c.api_versions,
            }),
            Object::HelmVersion => serde_json::json!({"Version": "v4.2"}),
        }
    }

    /// Field or method `name` with `args`.
    fn field(&self, name: &str, args: Vec<Value>, has_args: bool) -> Result<Value, String> {
        let want = |n: usize| -> Result<(), String> {
            if args.len() != n {
                return Err(format!("wrong number of args for {name}: want {n} got {}", args.len()));
            }
            Ok(())
        };
        let str_arg = |i: usize| -> Result<String, String> {
            match args.get(i) {
                Some(Value::Str(s)) => Ok(s.to_string()),
                Some(other) => Err(format!("wrong type for value; expected string; got {}", other.type_name())),
                None => Err(format!("wrong number of args for {name}")),
            }
        };
        let no_args = || -> Result<(), String> {
            if has_args {
                return Err(format!("{name} has arguments but cannot be invoked as function"));
            }
            Ok(())
        };
        match (self, name) {
            (Object::Capabilities(c), "KubeVersion") => {
                no_args()?;
                Ok(obj(Object::KubeVersion(c.clone())))
            }
            (Object::Capabilities(c), "APIVersions") => {
                no_args()?;
                Ok(obj(Object::ApiVersions(c.clone())))
            }
            (Object::Capabilities(_), "HelmVersion") => Ok(obj(Object::HelmVersion)),
            (Object::KubeVersion(c), "Version" | "GitVersion" | "String") => Ok(Value::str(c.kube_version.as_str())),
            (Object::KubeVersion(c), "Major") => Ok(Value::str(c.major_minor().0)),
            (Object::KubeVersion(c), "Minor") => Ok(Value::str(c.major_minor().1)),
            (Object::ApiVersions(c), "Has") => {
                want(1)?;
                let s = str_arg(0)?;
                Ok(Value::Bool(c.api_versions.contains(&s)))
            }
            (Object::HelmVersion, "Version") => Ok(Value::str("v4.2")),
            (Object::HelmVersion, "GoVersion") => Ok(Value::str("go1.26.6")),
            (Object::HelmVersion, "KubeClientVersion") => Ok(Value::str("v1.36")),
            (Object::HelmVersion, "GitCommit" | "GitTreeState") => Ok(Value::str("")),
            (Object::Files(f), "Get") => {
                want(1)?;
                let p = str_arg(0)?;
                Ok(Value::str(f.get(&p).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default()))
            }
            (Object::Files(f), "GetBytes") => {
                want(1)?;
                let p = str_arg(0)?;
                Ok(Value::list(
                    f.get(&p).map(|b| b.iter().map(|x| Value::Int(i64::from(*x))).collect()).unwrap_or_default(),
                ))
            }
            (Object::Files(f), "Glob") => {
                want(1)?;
                let pat = str_arg(0)?;
                let g = super::glob::glob_regex(&pat);
                let sub: BTreeMap<String, Arc<[u8]>> = f
                    .iter()
                    .filter(|(k, _)| g.as_ref().is_some_and(|g| g.is_match(k)))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Ok(obj(Object::Files(Arc::new(sub))))
            }
            (Object::Files(f), "AsConfig") => {
                want(0)?;
                let m: BTreeMap<String, Value> = f
                    .iter()
                    .map(|(k, v)| (base_name(k), Value::str(String::from_utf8_lossy(v).into_owned())))
                    .collect();
                Ok(Value::str(super::goyaml::to_yaml(&Value::map(m)).trim_end_matches('\n').to_string()))
            }
            (Object::Files(f), "AsSecrets") => {
                want(0)?;
                use base64::Engine as _;
                let m: BTreeMap<String, Value> = f
                    .iter()
                    .map(|(k, v)| (base_name(k), Value::str(base64::engine::general_purpose::STANDARD.encode(v))))
                    .collect();
                Ok(Value::str(super::goyaml::to_yaml(&Value::map(m)).trim_end_matches('\n').to_string()))
            }
            (Object::Files(f), "Lines") => {
                want(1)?;
                let p = str_arg(0)?;
                let Some(b) = f.get(&p) else {
                    return Ok(Value::list(Vec::new()));
                };
                let s = String::from_utf8_lossy(b);
                let s = s.strip_suffix('\n').unwrap_or(&s);
                Ok(Value::list(s.split('\n').map(Value::str).collect()))
            }
            _ => Err(format!("can't evaluate field {name} in type {}", self.type_name())),
        }
    }
}

fn base_name(p: &str) -> String {
    p.rsplit('/').next().unwrap_or(p).to_string()
}

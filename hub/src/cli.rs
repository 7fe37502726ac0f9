//! The `convoy` CLI's library half: the config file with contexts, dialing the hub with a CLI
//! certificate, and printing answers as tables or JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_shared::proto::ClusterInfo;
use convoy_shared::proto::fleet_service_client::FleetServiceClient;
use convoy_shared::tls::{self, HubAddress};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

/// Errors the CLI shows its user.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("could not read the config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid: {message}")]
    ParseConfig { path: PathBuf, message: String },
    #[error("context '{name}' is not in {path}; it has: {known}")]
    UnknownContext {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error(
        "no hub to talk to: pass --hub, --ca, --cert and --key, or a config file with --config / CONVOY_CONFIG (missing: {missing})"
    )]
    Incomplete { missing: String },
    #[error(transparent)]
    Pki(#[from] convoy_shared::pki::PkiError),
    #[error("{0}")]
    Tls(#[from] convoy_shared::tls::TlsError),
    #[error("{}", convoy_shared::link_error::explain(.0))]
    Call(#[from] tonic::Status),
}

pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// The CLI config file: named contexts, each a hub and the certificate to reach it with.
/// Relative paths are relative to the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    #[serde(default)]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

/// How to reach one hub.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Context {
    pub name: String,
    pub hub: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl ConfigFile {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadConfig {
            path: path.into(),
            source,
        })?;
        let mut file: ConfigFile =
            serde_saphyr::from_str(&text).map_err(|e| CliError::ParseConfig {
                path: path.into(),
                message: e.to_string(),
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for ctx in &mut file.contexts {
            for p in [&mut ctx.ca, &mut ctx.cert, &mut ctx.key]
                .into_iter()
                .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(file)
    }

    /// The named context, else the current one, else the only one.
    pub fn context(&self, name: Option<&str>, path: &Path) -> Result<Context> {
        let wanted = name
            .map(str::to_string)
            .or_else(|| self.current_context.clone());
        match wanted {
            Some(name) => self
                .contexts
                .iter()
                .find(|c| c.name == name)
                .cloned()
                .ok_or_else(|| CliError::UnknownContext {
                    name,
                    path: path.into(),
                    known: self
                        .contexts
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            None => Ok(self.contexts.first().cloned().unwrap_or_default()),
        }
    }
}

impl Context {
    /// Fills what this context lacks from `other` (flags override the file).
    pub fn overridden_by(self, other: Context) -> Context {
        Context {
            name: self.name,
            hub: other.hub.or(self.hub),
            ca: other.ca.or(self.ca),
            cert: other.cert.or(self.cert),
            key: other.key.or(self.key),
            server_name: other.server_name.or(self.server_name),
        }
    }

    /// Dials the hub with this context's certificate.
    pub async fn connect(&self) -> Result<FleetServiceClient<Channel>> {
        let missing: Vec<&str> = [
            ("hub", self.hub.is_none()),
            ("ca", self.ca.is_none()),
            ("cert", self.cert.is_none()),
            ("key", self.key.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        let (Some(hub), Some(ca), Some(cert), Some(key)) =
            (&self.hub, &self.ca, &self.cert, &self.key)
        else {
            return Err(CliError::Incomplete {
                missing: missing.join(", "),
            });
        };
        let material = tls::TlsMaterial::from_files(ca, cert, key)?;
        let config = tls::client_config(
            &material.ca_pem,
            Some((&material.cert_pem, &material.key_pem)),
        )?;
        let address = HubAddress::parse(hub, self.server_name.as_deref())?;
        let channel = tls::connect(&address, config, Duration::from_secs(5)).await?;
        Ok(FleetServiceClient::new(channel))
    }
}

/// Output formats every command supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Prints rows as an aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// How long ago `ms` (Unix milliseconds) was, in words a table can hold.
pub fn ago(ms: i64, now_ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// `convoy clusters` as a table.
pub fn clusters_table(clusters: &[ClusterInfo], now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                if c.connected {
                    "connected".into()
                } else {
                    "disconnected".into()
                },
                ago(c.last_seen_unix_ms, now_ms),
                if c.agent_version.is_empty() {
                    "-".into()
                } else {
                    c.agent_version.clone()
                },
                c.peer_address.clone(),
            ]
        })
        .collect();
    print_table(&["CLUSTER", "LINK", "LAST SEEN", "AGENT", "PEER"], &rows)
}

/// `convoy clusters -o json`: one object per cluster with stable field names.
pub fn clusters_json(clusters: &[ClusterInfo]) -> serde_json::Value {
    serde_json::Value::Array(
        clusters
            .iter()
            .map(|c| {
                let labels: BTreeMap<_, _> = c.labels.iter().collect();
                serde_json::json!({
                    "name": c.name,
                    "environment": c.environment,
                    "labels": labels,
                    "connected": c.connected,
                    "lastSeenUnixMs": c.last_seen_unix_ms,
                    "connectedSinceUnixMs": c.connected_since_unix_ms,
                    "agentVersion": c.agent_version,
                    "peer": c.peer_address,
                    "appliedRevision": c.applied_revision,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_contexts_resolve_relative_paths_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("convoy.yaml");
        std::fs::write(
            &path,
            "current-context: local\ncontexts:\n- name: local\n  hub: 127.0.0.1:7443\n  ca: certs/ca.crt\n  cert: /abs/admin.crt\n  key: certs/admin.key\n",
        )
        .unwrap();
        let file = ConfigFile::load(&path).unwrap();
        let ctx = file.context(None, &path).unwrap();
        assert_eq!(
            ctx.ca.as_deref(),
            Some(dir.path().join("certs/ca.crt").as_path())
        );
        assert_eq!(ctx.cert.as_deref(), Some(Path::new("/abs/admin.crt")));
        let ctx = ctx.overridden_by(Context {
            hub: Some("hub:1".into()),
            ..Default::default()
        });
        assert_eq!(ctx.hub.as_deref(), Some("hub:1"));
        assert!(matches!(
            file.context(Some("prod"), &path),
            Err(CliError::UnknownContext { .. })
        ));
    }

    #[test]
    fn unknown_config_fields_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("convoy.yaml");
        std::fs::write(&path, "contexts:\n- name: a\n  hubb: x\n").unwrap();
        let err = ConfigFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("hubb"), "{err}");
    }

    #[test]
    fn tables_align_columns() {
        let out = print_table(&["A", "B"], &[vec!["long-value".into(), "x".into()]]);
        assert_eq!(out, "A            B\nlong-value   x\n");
    }
}

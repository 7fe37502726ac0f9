//! `convoy users issue`: a CLI config for a person, with a short-lived certificate the hub signs
//! for their groups. The key is made here and never leaves this machine; the hub sees only the
//! certificate signing request.

use std::path::{Path, PathBuf};

use convoy_shared::proto::IssueUserResponse;

use crate::{CliError, ConfigFile, Context};

/// The files `issue` writes, beside the config: `FILE`, `STEM.crt`, `STEM.key` (mode 0600),
/// `STEM-ca.crt`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Written {
    pub user: String,
    pub config: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub not_after_unix: i64,
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CliError> {
    let failed = |source| CliError::Write { path: path.to_path_buf(), source };
    std::fs::write(path, text).map_err(failed)?;
    if private {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    Ok(())
}

/// Writes the config `out` for the issued certificate, reaching the hub as `via` does.
pub fn write_config(out: &Path, via: &Context, issued: &IssueUserResponse, key_pem: &str) -> Result<Written, CliError> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let stem = out.file_stem().and_then(|s| s.to_str()).unwrap_or("user").to_string();
    let name = |suffix: &str| format!("{stem}{suffix}");
    write(&dir.join(name(".key")), key_pem, true)?;
    write(&dir.join(name(".crt")), &issued.cert_pem, false)?;
    write(&dir.join(name("-ca.crt")), &issued.ca_pem, false)?;
    // Paths relative to the config, so the files can move together.
    let file = ConfigFile {
        current_context: Some(issued.user.clone()),
        contexts: vec![Context {
            name: issued.user.clone(),
            hub: via.hub.clone(),
            ca: Some(name("-ca.crt").into()),
            cert: Some(name(".crt").into()),
            key: Some(name(".key").into()),
            server_name: via.server_name.clone(),
        }],
    };
    let text = serde_saphyr::to_string(&file).expect("a config file always serializes");
    write(out, &text, true)?;
    Ok(Written {
        user: issued.user.clone(),
        config: out.to_path_buf(),
        cert: dir.join(name(".crt")),
        key: dir.join(name(".key")),
        ca: dir.join(name("-ca.crt")),
        not_after_unix: issued.not_after_unix,
    })
}

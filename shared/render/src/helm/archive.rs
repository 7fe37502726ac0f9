//! Chart archives (`.tgz`): the files of the one top-level directory they hold.

use std::collections::BTreeMap;
use std::io::Read as _;

/// Unpacks a gzipped tar chart archive into chart-relative paths (the leading
/// `<chart>/` directory removed).
pub fn untar(data: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let gz = flate2::read::GzDecoder::new(data);
    let mut ar = tar::Archive::new(gz);
    let mut out = BTreeMap::new();
    let entries = ar.entries().map_err(|e| format!("not a chart archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt chart archive: {e}"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path =
            entry.path().map_err(|e| format!("corrupt chart archive: {e}"))?.to_string_lossy().replace('\\', "/");
        if path.split('/').any(|p| p == "..") {
            return Err(format!("chart archive entry '{path}' leaves the chart"));
        }
        let Some((_, rel)) = path.split_once('/') else {
            continue;
        };
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf).map_err(|e| format!("corrupt chart archive: {e}"))?;
        out.insert(rel.to_string(), buf);
    }
    if out.is_empty() {
        return Err("empty chart archive".into());
    }
    Ok(out)
}

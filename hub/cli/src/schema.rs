//! `convoy schema`: the JSON Schemas of the fleet repository's files, as the fleet model derives
//! them, printed or written for editors (a `# yaml-language-server: $schema=…` line) and CI.

use std::path::Path;

use convoy_render::fleet::{FileSchema, schemas};

use crate::{CliError, print_table};

/// What `convoy schema [NAME] [--dir DIR]` prints: one schema, the files written, or the list.
pub fn command(name: Option<&str>, dir: Option<&Path>) -> Result<String, CliError> {
    let all = schemas();
    let pretty = |s: &FileSchema| serde_json::to_string_pretty(&s.schema).unwrap_or_default() + "\n";
    if let Some(name) = name {
        let schema = all.iter().find(|s| s.name == name).ok_or_else(|| CliError::UnknownSchema(name.to_string()))?;
        return Ok(pretty(schema));
    }
    let Some(dir) = dir else {
        let rows: Vec<Vec<String>> = all.iter().map(|s| vec![s.name.to_string(), s.files.to_string()]).collect();
        return Ok(print_table(&["SCHEMA", "FILES"], &rows)
            + "`convoy schema NAME` prints one; `convoy schema --dir DIR` writes DIR/NAME.json for each.\n");
    };
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write { path: dir.to_path_buf(), source })?;
    let mut out = String::new();
    for schema in &all {
        let path = dir.join(format!("{}.json", schema.name));
        std::fs::write(&path, pretty(schema)).map_err(|source| CliError::Write { path: path.clone(), source })?;
        out += &format!(
            "{}: {} (first line: # yaml-language-server: $schema={})\n",
            schema.files,
            path.display(),
            path.display()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_is_printed_by_name_and_a_wrong_name_lists_them() {
        let app: serde_json::Value = serde_json::from_str(&command(Some("app"), None).unwrap()).unwrap();
        assert_eq!(app["properties"]["kind"]["const"], "App");
        assert_eq!(app["additionalProperties"], false, "unknown keys are refused, as the hub refuses them");
        assert!(command(Some("apps"), None).unwrap_err().to_string().contains("fleet, cluster and app"));
        let dir = tempfile::tempdir().unwrap();
        let written = command(None, Some(dir.path())).unwrap();
        assert!(written.contains("apps/*/app.yaml") && dir.path().join("fleet.json").exists(), "{written}");
    }
}

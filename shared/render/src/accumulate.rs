//! The objects a build has gathered so far: adding one (its id must be new), or adding a
//! generated one as its `behavior` says (create, merge into or replace an existing one). Used by
//! the engine and by generator plugins alike.
//!
//! Decisions: whether an object is a duplicate, and what a merge or replace keeps of the object
//! it lands on.

use std::path::Path;

use serde_json::Value;

use super::resource::{Behavior, Resource};
use super::{RenderError, Result};

/// Adds `r`, refused when an object with its id is there already (`from` names where it came
/// from in the error).
pub(crate) fn append(acc: &mut Vec<Resource>, r: Resource, from: &Path) -> Result<()> {
    let name = r.name();
    if let Some(dup) = acc.iter().find(|x| x.name() == name && x.same_cur_id(&r)) {
        return Err(RenderError::DuplicateId {
            path: from.to_path_buf(),
            id: format!("{} (first from {})", dup.id_string(), dup.file.display()),
        });
    }
    acc.push(r);
    Ok(())
}

/// Adds a generated object, or merges/replaces an existing one as its behavior says.
pub(crate) fn append_replace_or_merge(acc: &mut Vec<Resource>, mut r: Resource, kfile: &Path) -> Result<()> {
    let gvk = r.gvk();
    let name = r.name().to_string();
    let ns = r.namespace().to_string();
    let hits: Vec<usize> =
        acc.iter().enumerate().filter(|(_, x)| x.any_id_equals(&gvk, &name, &ns)).map(|(i, _)| i).collect();
    match (hits.as_slice(), r.behavior) {
        ([], Behavior::Create) => append(acc, r, kfile),
        ([], _) => Err(RenderError::invalid(
            kfile,
            format!(
                "{} '{name}' has behavior merge or replace but no {} of that name exists in the resources; use behavior create",
                gvk.kind, gvk.kind
            ),
        )),
        ([_], Behavior::Create) => Err(RenderError::DuplicateId {
            path: kfile.to_path_buf(),
            id: format!("{} {name} (a generator with behavior create; use behavior merge or replace)", gvk.kind),
        }),
        ([i], behavior) => {
            let old = &acc[*i];
            merge_string_map(&mut r, old, "labels");
            merge_string_map(&mut r, old, "annotations");
            r.set_name(old.name());
            let old_ns = old.namespace().to_string();
            r.set_namespace(&old_ns);
            if behavior == Behavior::Merge {
                for field in ["data", "binaryData"] {
                    let mut merged = old.obj.get(field).and_then(Value::as_object).cloned().unwrap_or_default();
                    if let Some(Value::Object(new)) = r.obj.get(field) {
                        for (k, v) in new {
                            merged.insert(k.clone(), v.clone());
                        }
                    }
                    if !merged.is_empty() {
                        r.obj.insert(field.into(), Value::Object(merged));
                    }
                }
            }
            r.prev = old.prev.clone();
            // The object keeps the origin of the one it merged into or replaced.
            r.file = old.file.clone();
            r.generator = old.generator;
            r.generator_name = old.generator_name.clone();
            r.prefixes = old.prefixes.clone();
            r.suffixes = old.suffixes.clone();
            // Verified against kubectl: either side opting out of the hash wins.
            r.needs_hash = r.needs_hash && old.needs_hash;
            r.behavior = Behavior::Create;
            acc[*i] = r;
            Ok(())
        }
        (_, _) => Err(RenderError::invalid(
            kfile,
            format!("{} '{name}': several existing objects could accept the merge; give it a namespace", gvk.kind),
        )),
    }
}

fn merge_string_map(r: &mut Resource, old: &Resource, key: &str) {
    let Some(old_map) = old.meta_map(key) else {
        return;
    };
    let mut merged = old_map.clone();
    if let Some(new) = r.meta_map(key) {
        for (k, v) in new {
            merged.insert(k.clone(), v.clone());
        }
    }
    r.metadata_mut().insert(key.into(), Value::Object(merged));
}

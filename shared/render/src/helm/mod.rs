//! An in-process Helm engine: charts render exactly as Helm v4's engine renders them
//! (`helm template --skip-tests`), with no helm binary and no Go.
//!
//! - [`Chart::load`] reads a chart (and its vendored subcharts) through a [`crate::Source`].
//! - [`render`] turns a chart and user values into a [`Rendered`] release: CRDs, hooks by
//!   phase and weight, and manifests in Helm's install order, each with its template.
//! - [`render_files`] gives each template's raw output, as Helm's engine returns it.
//! - `fetch` (cargo feature `fetch`) resolves and caches charts from HTTP(S) chart
//!   repositories and OCI registries; [`Chart::from_archive`] loads what it fetched.
//!
//! The template language is Go's `text/template` with Helm's options; the function library
//! is Sprig v3 plus Helm's own (`include`, `tpl`, `required`, `toYaml`, `lookup`, …).

pub mod archive;
pub mod chart;
pub mod crypto;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod funcs;
pub mod glob;
pub mod goyaml;
pub mod objects;
pub mod release;
pub mod remote;
pub mod schema;
pub mod semver;
pub mod template;
pub mod time;
pub mod value;
pub mod values;
pub mod yaml_read;

use std::path::PathBuf;

pub use chart::Chart;
pub use objects::Capabilities;
pub use release::{Hook, HookPhase, Manifest, ReleaseOptions, Rendered, render, render_files};

/// Result type of the Helm engine.
pub type Result<T, E = HelmError> = std::result::Result<T, E>;

/// Why a chart did not render. Messages name the chart file, line and column, and the
/// value at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The chart could not be read or is malformed.
    #[error("{chart}: {message}")]
    Load {
        /// The chart directory.
        chart: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The values are not a mapping.
    #[error("values: {message}")]
    Values {
        /// What is wrong.
        message: String,
    },
    /// The values break a chart's `values.schema.json`.
    #[error("{message}")]
    Schema {
        /// Helm-style listing of the violations per chart.
        message: String,
    },
    /// A template does not parse.
    #[error("parse error at ({template}:{line}): {message}")]
    Parse {
        /// Template path.
        template: String,
        /// Line (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A template failed while executing (including `required` and `fail`).
    #[error("{error}")]
    Render {
        /// The located error.
        error: Box<template::exec::ExecError>,
    },
    /// A template's output is not valid YAML.
    #[error("{message}")]
    Manifest {
        /// Template path.
        template: String,
        /// Parser message.
        message: String,
    },
}

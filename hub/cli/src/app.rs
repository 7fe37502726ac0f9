//! `convoy render --app NAME --cluster NAME [--root REPO]`: one app rendered for one cluster
//! from the local work tree, exactly as the hub would (fleet model, overlays or chart values,
//! `${cluster.*}` variables, the app's namespace) — what a cluster will get, before pushing.
//! [`render_for`] is the one render of an app for a cluster from any [`Source`] (a work tree
//! here, commits for `convoy diff --base --head`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use convoy_render::app::AppError;
use convoy_render::fleet::{self, App, Cluster, Fleet};
use convoy_render::helm::fetch::{ChartFetcher, FetchConfig};
use convoy_render::helm::remote::Remote;
use convoy_render::helm::{Capabilities, Chart};
use convoy_render::{FsSource, RenderError, Source};
use serde_json::Value;

use crate::CliError;

/// Charts from chart repositories and registries, fetched into `~/.cache/convoy/charts`
/// (anonymously, over HTTPS with the platform's roots) by one fetcher made on first use and
/// shared by every render of the run.
#[derive(Debug, Default)]
pub struct RemoteCharts {
    fetcher: OnceLock<Result<ChartFetcher, String>>,
}

impl RemoteCharts {
    /// The chart `remote` names, from the cache or fetched.
    pub fn chart(&self, remote: &Remote) -> Result<Chart, RenderError> {
        let fetcher = self.fetcher.get_or_init(|| {
            let cache_dir = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("convoy/charts");
            ChartFetcher::new(FetchConfig { cache_dir, ..FetchConfig::default() }).map_err(|e| e.to_string())
        });
        match fetcher {
            Ok(fetcher) => fetcher.chart(remote).map(|(chart, _digest)| chart),
            Err(message) => Err(RenderError::Invalid { path: remote.to_string().into(), message: message.clone() }),
        }
    }
}

/// The objects `app` gets on `cluster`, rendered from `src` as the hub renders them. Charts
/// see Helm's default capabilities (the hub uses what the cluster's agent reports).
pub fn render_for(
    src: &Arc<dyn Source>,
    app: &App,
    cluster: &Cluster,
    charts: &RemoteCharts,
) -> Result<Vec<Value>, AppError> {
    convoy_render::app::render_app(src, app, cluster, &Capabilities::shared_default(), &|remote| charts.chart(remote))
        .map(|assignment| assignment.objects.into_vec())
}

/// The objects `app` gets on `cluster`, from the fleet repository work tree at `root`.
pub fn render_app(root: &Path, app: &str, cluster: &str) -> Result<Vec<Value>, CliError> {
    let src: Arc<dyn Source> = Arc::new(FsSource::new(root));
    let error = |message: String| CliError::Render(message);
    let fleet = Fleet::load(src.as_ref()).map_err(|e| error(e.to_string()))?;
    let Some(target) = fleet.clusters.get(cluster) else {
        let broken = fleet.cluster_errors.iter().find(|e| e.file.ends_with(&format!("/{cluster}.yaml")));
        return Err(error(match broken {
            Some(e) => e.to_string(),
            None => format!(
                "cluster '{cluster}' is not in {}/clusters (clusters: {})",
                root.display(),
                fleet.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }));
    };
    let env = fleet.environment(&target.environment).expect("a loaded cluster's environment is in the fleet");
    let mut apps = fleet::load_apps(src.as_ref(), env);
    let Some(spec) = apps.remove(app) else {
        return Err(error(format!(
            "app '{app}' is not in {}/apps (apps: {})",
            root.display(),
            apps.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    let spec = spec.map_err(|e| error(e.to_string()))?;
    if !spec.targets(target) {
        return Err(error(format!(
            "app '{app}' does not go to cluster '{cluster}': its targets in apps/{app}/app.yaml do not select it"
        )));
    }
    render_for(&src, &spec, target, &RemoteCharts::default())
        .map_err(|e| error(format!("app '{app}' on cluster '{cluster}': {e}")))
}

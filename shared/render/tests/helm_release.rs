//! The Helm engine's public API: a chart read through any `Source` (here an in-memory tree,
//! as the hub reads Git trees) renders into CRDs, hooks by phase and weight, and manifests in
//! Helm's install order; errors name the template file, line and column, and the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convoy_render::helm::{Chart, HelmError, HookPhase, ReleaseOptions, render};
use convoy_render::{EntryKind, RenderError, Source};
use serde_json::json;

/// A repository held in memory.
struct MemSource(BTreeMap<PathBuf, Vec<u8>>);

impl MemSource {
    fn new(files: &[(&str, &str)]) -> Self {
        MemSource(files.iter().map(|(p, t)| (PathBuf::from(p), t.as_bytes().to_vec())).collect())
    }
}

impl Source for MemSource {
    fn kind(&self, path: &Path) -> convoy_render::Result<Option<EntryKind>> {
        if self.0.contains_key(path) {
            return Ok(Some(EntryKind::File));
        }
        Ok(self.0.keys().any(|k| k.starts_with(path) && k != path).then_some(EntryKind::Dir))
    }
    fn read(&self, path: &Path) -> convoy_render::Result<Vec<u8>> {
        self.0.get(path).cloned().ok_or_else(|| RenderError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })
    }
    fn list_dir(&self, path: &Path) -> convoy_render::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(path).ok())
            .filter_map(|rest| rest.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }
}

fn app_chart(extra: &[(&'static str, &'static str)]) -> MemSource {
    let mut files = vec![
        ("apps/web/chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n"),
        ("apps/web/chart/values.yaml", "replicas: 2\nimage: nginx\n"),
        (
            "apps/web/chart/templates/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicas }}\n",
        ),
        ("apps/web/chart/templates/svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: {{ .Release.Name }}}\n"),
        (
            "apps/web/chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
        ),
        (
            "apps/web/chart/templates/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: {{ .Release.Namespace }}}\n",
        ),
        (
            "apps/web/chart/templates/hooks.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: late\n  annotations: {helm.sh/hook: post-install, helm.sh/hook-weight: \"5\"}\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: early\n  annotations: {helm.sh/hook: \"pre-install,pre-upgrade\", helm.sh/hook-weight: \"-1\", helm.sh/hook-delete-policy: hook-succeeded}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n",
        ),
        ("apps/web/chart/templates/NOTES.txt", "Installed {{ .Release.Name }}."),
        ("apps/web/chart/templates/_helpers.tpl", "{{- define \"x\" }}{{ end }}"),
        (
            "apps/web/chart/crds/crd.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n",
        ),
    ];
    files.extend_from_slice(extra);
    MemSource::new(&files)
}

#[test]
fn renders_from_any_source_in_helm_install_order() {
    let src = app_chart(&[]);
    let chart = Chart::load(&src, Path::new("apps/web/chart")).expect("load");
    let out = render(&chart, &json!({"replicas": 3}), &ReleaseOptions::new("web", "team")).expect("render");
    let kinds: Vec<(String, String)> = out
        .manifests
        .iter()
        .map(|m| {
            (m.object["kind"].as_str().unwrap().to_string(), m.object["metadata"]["name"].as_str().unwrap().to_string())
        })
        .collect();
    // Kind order first; within a kind, template path order then document order.
    assert_eq!(
        kinds,
        [("Namespace", "team"), ("ConfigMap", "b"), ("ConfigMap", "a"), ("Service", "web"), ("Deployment", "web")]
            .map(|(k, n)| (k.to_string(), n.to_string()))
    );
    assert_eq!(out.manifests[4].object["spec"]["replicas"], 3.0);
    assert_eq!(out.manifests[4].source, "web/templates/deploy.yaml");
    assert_eq!(out.crds.len(), 1);
    assert_eq!(out.crds[0].source, "web/crds/crd.yaml");
    assert_eq!(out.notes.as_deref(), Some("Installed web."));
    // Hooks: test hooks left out; execution order by weight.
    let names: Vec<&str> = out.hooks.iter().map(|h| h.object["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["early", "late"]);
    assert_eq!(out.hooks[0].phases, [HookPhase::PreInstall, HookPhase::PreUpgrade]);
    assert_eq!(out.hooks[0].delete_policies, ["hook-succeeded"]);
    assert_eq!(out.hooks_for(HookPhase::PostInstall).len(), 1);
    let printed = out.to_helm_template();
    assert!(
        printed.starts_with("---\n# Source: web/templates/ns.yaml\napiVersion: v1\nkind: Namespace\n"),
        "{printed}"
    );
}

#[test]
fn errors_name_the_template_line_column_and_value() {
    let src = app_chart(&[(
        "apps/web/chart/templates/bad.yaml",
        "kind: ConfigMap\ndata:\n  x: {{ required \"image.tag is required\" .Values.image.tag }}\n",
    )]);
    let chart = Chart::load(&src, Path::new("apps/web/chart")).expect("load");
    let err = render(&chart, &json!({"image": {"repository": "x"}}), &ReleaseOptions::new("web", "team"))
        .expect_err("required");
    assert_eq!(err.to_string(), "execution error at (web/templates/bad.yaml:3:8): image.tag is required");

    let src = app_chart(&[(
        "apps/web/chart/templates/bad.yaml",
        "kind: ConfigMap\ndata:\n  x: {{ .Values.missing.deep }}\n",
    )]);
    let chart = Chart::load(&src, Path::new("apps/web/chart")).expect("load");
    let err = render(&chart, &json!({}), &ReleaseOptions::new("web", "team")).expect_err("nil");
    assert!(matches!(err, HelmError::Render { .. }));
    assert_eq!(
        err.to_string(),
        "web/templates/bad.yaml:3:15\n  executing \"web/templates/bad.yaml\" at <.Values.missing.deep>:\n    nil pointer evaluating interface {}.deep"
    );

    let src = app_chart(&[("apps/web/chart/templates/bad.yaml", "a: {{ if }}\n")]);
    let chart = Chart::load(&src, Path::new("apps/web/chart")).expect("load");
    let err = render(&chart, &json!({}), &ReleaseOptions::new("web", "team")).expect_err("parse");
    assert!(err.to_string().contains("web/templates/bad.yaml:1"), "{err}");

    let src = app_chart(&[("apps/web/chart/templates/bad.yaml", "a: [unclosed\n")]);
    let chart = Chart::load(&src, Path::new("apps/web/chart")).expect("load");
    let err = render(&chart, &json!({}), &ReleaseOptions::new("web", "team")).expect_err("yaml");
    assert!(err.to_string().contains("YAML parse error on web/templates/bad.yaml"), "{err}");
}

#[test]
fn capabilities_come_from_the_target_cluster() {
    let src = MemSource::new(&[
        ("c/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n"),
        (
            "c/templates/x.yaml",
            "kind: ConfigMap\ndata:\n  v: {{ .Capabilities.KubeVersion.Version | quote }}\n  mon: {{ .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\" | quote }}\n  new: {{ semverCompare \">=1.30-0\" .Capabilities.KubeVersion.GitVersion | quote }}\n",
        ),
    ]);
    let chart = Chart::load(&src, Path::new("c")).expect("load");
    let mut opts = ReleaseOptions::new("r", "n");
    let capabilities = std::sync::Arc::make_mut(&mut opts.capabilities);
    capabilities.kube_version = "v1.29.4".into();
    capabilities.api_versions.push("monitoring.coreos.com/v1".into());
    let out = render(&chart, &json!({}), &opts).expect("render");
    assert_eq!(out.manifests[0].object["data"], json!({"v": "v1.29.4", "mon": "true", "new": "false"}));
}

#[test]
fn a_declared_dependency_must_be_vendored() {
    let src = MemSource::new(&[
        (
            "c/Chart.yaml",
            "apiVersion: v2\nname: c\nversion: 0.1.0\ndependencies:\n- {name: redis, version: 18.x, repository: https://charts.example.com}\n",
        ),
        ("c/templates/x.yaml", "kind: ConfigMap\n"),
    ]);
    let chart = Chart::load(&src, Path::new("c")).expect("load");
    let err = render(&chart, &json!({}), &ReleaseOptions::new("r", "n")).expect_err("missing");
    assert!(err.to_string().contains("missing in charts/ directory: redis"), "{err}");
}

/// kustomize's `helmCharts:` renders the chart with the same engine; the kustomization's own
/// transformers and patches then apply to the chart's objects like to any resource.
#[test]
fn a_kustomization_inflates_helm_charts_and_patches_them() {
    let src = MemSource::new(&[
        ("app/charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n"),
        ("app/charts/web/values.yaml", "replicas: 2\nimage: nginx\nport: 80\n"),
        (
            "app/charts/web/templates/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  namespace: {{ .Release.Namespace }}\nspec:\n  replicas: {{ .Values.replicas }}\n  template:\n    spec:\n      containers:\n      - name: web\n        image: {{ .Values.image }}\n        ports: [{containerPort: {{ .Values.port }}}]\n",
        ),
        (
            "app/charts/web/templates/hook.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-migrate\n  annotations: {helm.sh/hook: pre-install}\n",
        ),
        (
            "app/charts/web/crds/crd.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\n",
        ),
        ("app/more-values.yaml", "port: 8080\n"),
        (
            "app/kustomization.yaml",
            "helmCharts:\n- name: web\n  releaseName: shop\n  namespace: team\n  valuesInline: {replicas: 5}\n  additionalValuesFiles: [more-values.yaml]\ncommonLabels: {owner: team}\npatches:\n- target: {kind: Deployment}\n  patch: |\n    - op: replace\n      path: /spec/template/spec/containers/0/image\n      value: nginx:1.27\n",
        ),
    ]);
    let objects =
        convoy_render::Renderer::with_source(std::sync::Arc::new(src)).render(Path::new("app")).expect("render");
    let names: Vec<(&str, &str)> =
        objects.iter().map(|o| (o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap())).collect();
    // helm template's order: manifests, then hooks; CRDs only with includeCRDs.
    assert_eq!(names, [("Deployment", "shop"), ("Job", "shop-migrate")]);
    let deploy = &objects[0];
    assert_eq!(deploy["metadata"]["namespace"], "team");
    assert_eq!(deploy["metadata"]["labels"]["owner"], "team");
    assert_eq!(deploy["spec"]["replicas"], json!(5), "an integer, as the API server wants it");
    assert!(
        deploy["spec"]["replicas"].is_u64() || deploy["spec"]["replicas"].is_i64(),
        "{}",
        deploy["spec"]["replicas"]
    );
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], json!(8080));
}

#[test]
fn a_helm_chart_kustomize_cannot_find_is_an_error_saying_where_and_how_to_vendor_it() {
    let src = MemSource::new(&[(
        "app/kustomization.yaml",
        "helmCharts:\n- name: redis\n  repo: https://charts.example.com\n  version: 1.2.3\n",
    )]);
    let err = convoy_render::Renderer::with_source(std::sync::Arc::new(src)).render(Path::new("app")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("app/kustomization.yaml") && text.contains("app/charts"), "{text}");
    assert!(
        text.contains(
            "helm pull --untar --untardir app/charts --repo https://charts.example.com redis --version 1.2.3"
        ),
        "{text}"
    );
}

/// A chart that makes its own TLS (as Elastic's, OpenTelemetry's and metrics-server's do):
/// the render holds tokens, not keys, is the same at every render, and marks the objects
/// holding them for the agent, which makes the keys (`convoy_model::generated`).
#[test]
fn generated_certificates_render_as_stable_tokens_for_the_agent() {
    let tls = "{{- $ca := genCA \"web-ca\" 365 }}\n{{- $cert := genSignedCert \"web\" nil (list \"web.team.svc\") 365 $ca }}\n\
               apiVersion: v1\nkind: Secret\nmetadata: {name: web-tls}\ndata:\n  tls.crt: {{ $cert.Cert | b64enc }}\n  \
               tls.key: {{ $cert.Key | b64enc }}\n  ca.crt: {{ $ca.Cert | b64enc }}\n---\n\
               apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: web}\n\
               webhooks:\n- name: web.example.com\n  clientConfig: {caBundle: {{ $ca.Cert | b64enc }}}\n";
    let src = app_chart(&[("apps/web/chart/templates/tls.yaml", tls)]);
    let chart = Chart::load(&src, Path::new("apps/web/chart")).expect("load");
    let once = || render(&chart, &json!({}), &ReleaseOptions::new("web", "team")).expect("render");
    let (first, second) = (once(), once());
    let objects = |r: &convoy_render::helm::Rendered| r.manifests.iter().map(|m| m.object.clone()).collect::<Vec<_>>();
    assert_eq!(objects(&first), objects(&second), "the same at every render: no endless drift");
    let printed = first.to_helm_template();
    assert!(!printed.contains("PRIVATE KEY") && !printed.contains("BEGIN"), "no key at the hub");
    let find = |kind: &str| first.manifests.iter().find(|m| m.object["kind"] == kind).expect(kind).object.clone();
    let (secret, webhook) = (find("Secret"), find("ValidatingWebhookConfiguration"));
    for object in [&secret, &webhook] {
        assert_eq!(object["metadata"]["annotations"][convoy_model::generated::ANNOTATION], "true", "{object}");
        assert!(convoy_model::generated::holds_tokens(object));
    }
    assert_eq!(secret["data"]["ca.crt"], webhook["webhooks"][0]["clientConfig"]["caBundle"], "one CA");
    let deployment = find("Deployment");
    assert!(deployment["metadata"].get("annotations").is_none(), "objects without tokens are left alone");
}

//! The dashboard's files, embedded in the binary: nothing is fetched from anywhere else, so the
//! page works offline. Written by hand (no JS toolchain, nothing to build).

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset =
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("assets/index.html") };

const ASSETS: [Asset; 3] = [
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("assets/app.js") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("assets/app.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_str!("assets/icon.svg") },
];

/// Every page's HTML: the script routes by path.
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, INDEX.content_type)], INDEX.body).into_response()
}

/// `/assets/FILE`, revalidated by its content hash.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return super::api::error(StatusCode::NOT_FOUND, format!("no asset '{file}'"));
    };
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(asset.body.as_bytes())[..12]));
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str());
    let cache = [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))];
    let tag = [(header::ETAG, HeaderValue::from_str(&etag).expect("hex is a valid header"))];
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache, tag).into_response();
    }
    (cache, tag, [(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CSP forbids inline scripts and style attributes: the files must not need them, and
    /// must load nothing from elsewhere.
    #[test]
    fn the_files_load_nothing_from_elsewhere_and_need_no_inline_code() {
        let html = INDEX.body;
        assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#));
        assert!(!html.contains("<script>") && !html.contains(" style="), "inline script or style in index.html");
        for asset in ASSETS.iter().chain([&INDEX]) {
            for remote in ["http://", "https://", "//fonts.", "@import url("] {
                let hits: Vec<&str> =
                    asset.body.lines().filter(|l| l.contains(remote) && !l.contains("www.w3.org")).collect();
                assert!(hits.is_empty(), "{} reaches elsewhere: {hits:?}", asset.name);
            }
        }
        assert!(!ASSETS[0].body.contains("eval("), "app.js needs eval, which the CSP forbids");
    }
}

//! The dashboard: static pages embedded in the binary, served on the admin
//! listener at `/ui`. They hold no data; the page reads and writes through
//! the same API as everyone else, with the token the user gives it.

use super::{AdminBody, Resp};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// Each asset: path under `/ui/`, content type, bytes. `""` is the page.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("", "text/html; charset=utf-8", include_bytes!("../../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/app.js")),
    ("style.css", "text/css; charset=utf-8", include_bytes!("../../ui/style.css")),
    ("uplot.js", "text/javascript; charset=utf-8", include_bytes!("../../ui/vendor/uplot-1.6.32/uPlot.iife.min.js")),
    ("uplot.css", "text/css; charset=utf-8", include_bytes!("../../ui/vendor/uplot-1.6.32/uPlot.min.css")),
    ("LICENSE.uplot", "text/plain; charset=utf-8", include_bytes!("../../ui/vendor/uplot-1.6.32/LICENSE")),
];

/// Scripts, styles and API calls from this listener only; nothing inline,
/// no frames (the buttons cannot be clickjacked), no forms posted anywhere.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                      img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path` (`/ui`, `/ui/`, `/ui/app.js`, ...), if it is one.
pub(super) fn asset(path: &str) -> Option<Resp> {
    let name = path.strip_prefix("/ui")?;
    let name = if name.is_empty() { "" } else { name.strip_prefix('/')? };
    let (_, content_type, bytes) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut r = Response::new(AdminBody::Full(Full::new(Bytes::from_static(bytes))));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load: a new binary's page is never mixed with the old script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Some(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn serves_the_page_and_its_assets_only() {
        for p in ["/ui", "/ui/", "/ui/app.js", "/ui/uplot.js", "/ui/style.css"] {
            assert!(super::asset(p).is_some(), "{p}");
        }
        for p in ["/uix", "/ui/../v1/services", "/ui/app.js/", "/ui/nope"] {
            assert!(super::asset(p).is_none(), "{p}");
        }
    }
}

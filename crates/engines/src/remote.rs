//! What every provider adapter shares: the HTTP client, the mapping of
//! provider failures to our error codes, secrets that never print, the
//! multipart encoder, and the safe decode of what providers send back.

use std::time::Duration;

use base64::Engine as _;
use domain::{Error, ErrorCode, Result};
use imaging::{DecodeLimits, RgbaImage};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, StatusCode};

use crate::EngineImage;

/// A credential. `Debug` and `Display` print `***`, so it can sit in
/// config structs and errors without reaching a log.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// An HTTP client for one provider. Redirects are not followed: a provider
/// has no business sending our requests (and credentials) elsewhere.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client builds with static settings")
}

/// `base` without a trailing slash, then `path`.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

/// Sends a request; transport failures (refused, reset, timed out) are
/// `unavailable`, never carrying the URL (it may hold a query secret).
pub(crate) async fn send(provider: &str, request: RequestBuilder) -> Result<Response> {
    request.send().await.map_err(|e| unavailable(provider, &format!("unreachable ({})", e.without_url())))
}

pub(crate) fn unavailable(provider: &str, what: &str) -> Error {
    Error::new(ErrorCode::Unavailable, format!("provider {provider}: {what}"))
}

/// The body of a successful response, or the failure mapped to our codes:
/// 429 is `rate_limited` with its `Retry-After`; 5xx, 408, 404 and
/// credential refusals are `unavailable` (another provider may serve the
/// task); other 4xx are the request's fault (`invalid_input`), with the
/// provider's own message when `message_of` finds one.
pub(crate) async fn checked(provider: &str, response: Response, message_of: fn(&serde_json::Value) -> Option<String>) -> Result<Vec<u8>> {
    let status = response.status();
    let retry_after = retry_after_secs(response.headers());
    let body = response.bytes().await.map_err(|e| unavailable(provider, &format!("response cut off ({})", e.without_url())))?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let detail = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| message_of(&v));
    Err(status_error(provider, status, retry_after, detail))
}

pub(crate) fn status_error(provider: &str, status: StatusCode, retry_after: Option<u64>, detail: Option<String>) -> Error {
    match status.as_u16() {
        429 => {
            let e = Error::new(ErrorCode::RateLimited, format!("provider {provider} is rate limiting"));
            match retry_after {
                Some(secs) => e.with_retry_after(secs),
                None => e,
            }
        }
        // Credentials are the operator's business: their text (OpenAI echoes
        // part of the key) stays out of the task's error.
        401 | 403 => unavailable(provider, &format!("refused our credentials (HTTP {})", status.as_u16())),
        404 | 408 | 500..=599 => unavailable(provider, &format!("HTTP {}", status.as_u16())),
        _ => Error::invalid(match detail {
            Some(d) => format!("provider {provider} refused the request: {d}"),
            None => format!("provider {provider} refused the request (HTTP {})", status.as_u16()),
        }),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub(crate) fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
    headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(provider: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| unavailable(provider, &format!("unexpected response ({e})")))
}

/// Limits for images coming back from providers: generous, but a provider
/// cannot make us allocate without bound.
pub(crate) const OUTPUT_LIMITS: DecodeLimits =
    DecodeLimits { max_bytes: imaging::DEFAULT_MAX_BYTES * 2, max_width: 8192, max_height: 8192, max_pixels: imaging::DEFAULT_MAX_PIXELS };

/// A provider's image through the safe decoder (limits, EXIF orientation,
/// metadata dropped), resized to the size the task asked for when the
/// provider rendered another one. Nothing is drawn onto it.
pub(crate) async fn decode_output(provider: &str, bytes: Vec<u8>, width: u32, height: u32) -> Result<EngineImage> {
    let provider = provider.to_string();
    tokio::task::spawn_blocking(move || {
        let decoded = imaging::decode(&bytes, &OUTPUT_LIMITS)
            .map_err(|e| unavailable(&provider, &format!("sent an unusable image ({})", e.message)))?;
        let image =
            if decoded.image.dimensions() == (width, height) { decoded.image } else { imaging::resize(&decoded.image, width, height)? };
        Ok(EngineImage { image })
    })
    .await
    .map_err(|e| Error::internal(format!("image work failed: {e}")))?
}

pub(crate) fn png(image: &RgbaImage) -> Result<Vec<u8>> {
    Ok(imaging::encode_png(image)?.bytes)
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(provider: &str, text: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| unavailable(provider, "sent an image that is not base64"))
}

/// `images[0]` at the output size, and where to paint as a mask of the
/// same size (alpha 0 = paint): the request's mask, else the image's own
/// transparency; `None` when the whole image may change.
pub(crate) fn edit_inputs(req: &crate::EditRequest) -> Result<(RgbaImage, Option<RgbaImage>)> {
    let first = req.images.first().ok_or_else(|| Error::invalid("an edit needs an image"))?;
    let (w, h) = (req.width, req.height);
    let image = if first.dimensions() == (w, h) { first.clone() } else { imaging::resize(first, w, h)? };
    let mask = match &req.mask {
        Some(m) if m.dimensions() == (w, h) => Some(m.clone()),
        Some(m) => Some(imaging::resize_nearest(m, w, h)?),
        None => imaging::mask_from_alpha(&image),
    };
    Ok((image, mask))
}

/// The mask as most Stable Diffusion servers take it: white paints, black keeps.
pub(crate) fn white_paints(mask: &RgbaImage) -> RgbaImage {
    RgbaImage::from_fn(mask.width(), mask.height(), |x, y| {
        let v = if mask.get_pixel(x, y).0[3] == 0 { 255 } else { 0 };
        imaging::Rgba([v, v, v, 255])
    })
}

/// A `multipart/form-data` body, built by hand: a handful of text fields
/// and PNG files.
pub(crate) struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    pub(crate) fn new() -> Multipart {
        Multipart { boundary: format!("atelier-{:032x}", rand::random::<u128>()), body: Vec::new() }
    }

    pub(crate) fn text(mut self, name: &str, value: &str) -> Multipart {
        self.head(name, None);
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    pub(crate) fn png(mut self, name: &str, filename: &str, bytes: &[u8]) -> Multipart {
        self.head(name, Some(filename));
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    fn head(&mut self, name: &str, filename: Option<&str>) {
        let mut head = format!("--{}\r\nContent-Disposition: form-data; name=\"{}\"", self.boundary, quote(name));
        if let Some(f) = filename {
            head.push_str(&format!("; filename=\"{}\"\r\nContent-Type: image/png", quote(f)));
        }
        head.push_str("\r\n\r\n");
        self.body.extend_from_slice(head.as_bytes());
    }

    /// Attaches the body and its content type to `request`.
    pub(crate) fn attach(mut self, request: RequestBuilder) -> RequestBuilder {
        self.body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        request.header(reqwest::header::CONTENT_TYPE, format!("multipart/form-data; boundary={}", self.boundary)).body(self.body)
    }
}

fn quote(s: &str) -> String {
    s.replace(['"', '\r', '\n'], "_")
}

/// Fetches a result file (a provider's output URL). Only http(s).
pub(crate) async fn fetch(provider: &str, client: &reqwest::Client, url: &str, auth: Option<&Secret>) -> Result<Vec<u8>> {
    if let Some(data) = url.strip_prefix("data:") {
        let (_, payload) =
            data.split_once(";base64,").ok_or_else(|| unavailable(provider, "sent an output data URL that is not base64"))?;
        return unb64(provider, payload);
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(unavailable(provider, "sent an output that is not an http(s) URL"));
    }
    let mut request = client.get(url);
    if let Some(token) = auth {
        request = request.bearer_auth(token.expose());
    }
    let response = send(provider, request).await?;
    checked(provider, response, |_| None).await
}

/// Tells the provider to stop a job when the call is dropped before
/// [`CancelOnDrop::disarm`]: the task was canceled, its lease lost, or the
/// router's timeout fired. The cancel request runs detached.
pub(crate) struct CancelOnDrop {
    request: Option<RequestBuilder>,
    provider: String,
}

impl CancelOnDrop {
    pub(crate) fn new(provider: &str, request: RequestBuilder) -> CancelOnDrop {
        CancelOnDrop { request: Some(request), provider: provider.to_string() }
    }

    pub(crate) fn disarm(mut self) {
        self.request = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let (Some(request), Ok(runtime)) = (self.request.take(), tokio::runtime::Handle::try_current()) else { return };
        let provider = std::mem::take(&mut self.provider);
        runtime.spawn(async move {
            match request.timeout(Duration::from_secs(10)).send().await {
                Ok(r) if r.status().is_success() => tracing::info!(provider = %provider, "provider job canceled"),
                Ok(r) => tracing::warn!(provider = %provider, status = r.status().as_u16(), "provider refused the cancel"),
                Err(e) => tracing::warn!(provider = %provider, error = %e.without_url(), "cancel did not reach the provider"),
            }
        });
    }
}

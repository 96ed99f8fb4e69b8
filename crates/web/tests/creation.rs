//! The creation pages through the router: the gallery's keyset pages and
//! filters, multi-select delete, share links (off by default, revocable,
//! the owner's only), downloads converted on the fly, the generate page's
//! choices and the account event stream with preview frames.

mod common;

use axum::http::{Method, StatusCode};
use common::{App, Client};
use futures_util::StreamExt;
use imaging::{Rgba, RgbaImage};
use serde_json::{json, Value};
use store::testing::TestBackend;
use web::WebConfig;

fn png(width: u32, height: u32, color: [u8; 3]) -> Vec<u8> {
    let img = RgbaImage::from_pixel(width, height, Rgba([color[0], color[1], color[2], 255]));
    imaging::encode_png(&img).unwrap().bytes
}

async fn upload(client: &mut Client, bytes: Vec<u8>) -> Value {
    let csrf = client.csrf();
    let resp = client.send(Method::POST, "/api/v1/uploads", Some("image/png"), bytes, &[("x-csrf-token", &csrf)]).await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    resp.json()
}

/// `n` generated 256x256 images, newest last.
async fn generated(app: &App, client: &mut Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let task = client.submit(json!({"prompt": format!("lighthouse number {i}"), "size": "256x256"})).await;
        app.run_tasks().await;
        let done = client.api(Method::GET, &format!("/api/v1/tasks/{}", task["id"].as_str().unwrap()), None, &[]).await.json();
        ids.push(done["outputs"][0]["id"].as_str().unwrap().to_string());
    }
    ids
}

fn ids_of(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

fn today() -> String {
    domain::time::format_utc(store::now_ms())[..10].to_string()
}

fn day_offset(days: i64) -> String {
    domain::time::format_utc(store::now_ms() + days * 86_400_000)[..10].to_string()
}

#[tokio::test]
async fn gallery_pages_by_keyset_and_filters_by_kind_saving_and_date() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let app = App::new(backend).await;
        let mut client = app.client();
        client.signed_up("gallery@example.org").await;
        let outputs = generated(&app, &mut client, 4).await;
        let uploads = [upload(&mut client, png(40, 30, [200, 10, 10])).await, upload(&mut client, png(30, 40, [10, 10, 200])).await];
        let saved = &outputs[1];
        assert_eq!(
            client.post_form(&format!("/images/{saved}/save"), &[("saved", "true"), ("back", "gallery")]).await.location(),
            "/gallery"
        );

        // Keyset pages of 2 walk every image once, newest first.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/gallery?limit=2&before={c}"),
                None => "/api/v1/gallery?limit=2".to_string(),
            };
            let page = client.api(Method::GET, &path, None, &[]).await.json();
            assert!(page["items"].as_array().unwrap().len() <= 2);
            seen.extend(ids_of(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut expected: Vec<String> = outputs.clone();
        expected.extend(uploads.iter().map(|u| u["id"].as_str().unwrap().to_string()));
        expected.sort();
        expected.reverse();
        assert_eq!(seen, expected, "every image once, newest first");

        let list = |show: &str| format!("/api/v1/gallery?show={show}");
        let page = client.api(Method::GET, &list("uploads"), None, &[]).await.json();
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert!(page["items"].as_array().unwrap().iter().all(|i| i["kind"] == "upload" && i["thumbnail_url"].as_str().is_some()));
        assert_eq!(ids_of(&client.api(Method::GET, &list("outputs"), None, &[]).await.json()).len(), 4);
        assert_eq!(ids_of(&client.api(Method::GET, &list("saved"), None, &[]).await.json()), vec![saved.clone()]);
        let unsaved = client.api(Method::GET, &list("unsaved"), None, &[]).await.json();
        assert_eq!(ids_of(&unsaved).len(), 3);
        assert!(unsaved["items"].as_array().unwrap().iter().all(|i| i["saved"] == false && i["expires_at"].as_i64().is_some()));

        let dated = |from: &str, to: &str| format!("/api/v1/gallery?from={from}&to={to}");
        assert_eq!(ids_of(&client.api(Method::GET, &dated(&today(), &today()), None, &[]).await.json()).len(), 6);
        assert!(ids_of(&client.api(Method::GET, &dated(&day_offset(1), &day_offset(2)), None, &[]).await.json()).is_empty());
        assert!(ids_of(&client.api(Method::GET, &dated(&day_offset(-3), &day_offset(-1)), None, &[]).await.json()).is_empty());

        // The page: filters, the retention notice with one-click save on unsaved images only.
        let page = client.get("/gallery?show=unsaved").await.text();
        assert!(page.contains(r#"<option value="unsaved" selected>"#) && page.contains("30 days"), "{page}");
        assert_eq!(page.matches(r#"class="tile-save""#).count(), 3 + 1, "three tiles and the template");
        assert!(!page.contains(&format!(r#"data-id="{saved}""#)));
        let uploads_page = client.get("/gallery?show=uploads").await.text();
        assert_eq!(uploads_page.matches(r#"<li class="tile""#).count(), 2 + 1);
        let paged = client.get("/gallery?limit=2&show=outputs").await.text();
        assert!(paged.contains("&amp;show=outputs") && paged.contains(r#"id="gallery-more""#), "older pages keep the filter");

        for bad in [
            "show=everything",
            "from=2026-13-01",
            "to=yesterday",
            "limit=0",
            "limit=101",
            "before=not-an-id",
            "from=2026-05-02&to=2026-05-01",
        ] {
            let resp = client.api(Method::GET, &format!("/api/v1/gallery?{bad}"), None, &[]).await;
            assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "invalid_input".to_string()), "{bad}");
            assert_eq!(client.get(&format!("/gallery?{bad}")).await.status, StatusCode::BAD_REQUEST, "{bad}");
        }

        let mut other = app.client();
        other.signed_up("other@example.org").await;
        assert!(ids_of(&other.api(Method::GET, "/api/v1/gallery", None, &[]).await.json()).is_empty(), "another account sees nothing");
        assert_eq!(app.client().get("/api/v1/gallery").await.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn c30_multi_select_delete_removes_the_chosen_images_and_their_files() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut client = app.client();
    client.signed_up("bulk@example.org").await;
    let ids = generated(&app, &mut client, 3).await;
    let mut other = app.client();
    other.signed_up("bystander@example.org").await;
    let theirs = generated(&app, &mut other, 1).await.remove(0);
    let files_before = app.object_files().len();

    let resp = client.post_form("/gallery/delete", &[("ids", &ids[0]), ("ids", &ids[2]), ("ids", &theirs)]).await;
    assert_eq!((resp.status, resp.location()), (StatusCode::SEE_OTHER, "/gallery".to_string()), "{}", resp.text());
    assert_eq!(ids_of(&client.api(Method::GET, "/api/v1/gallery", None, &[]).await.json()), vec![ids[1].clone()]);
    assert_eq!(app.object_files().len(), files_before - 4, "two images and their thumbnails left the disk");
    assert_eq!(other.get(&format!("/api/v1/assets/{theirs}")).await.status, StatusCode::OK, "someone else's image is untouched");

    let forged = client
        .send(Method::POST, "/gallery/delete", Some("application/x-www-form-urlencoded"), format!("ids={}", ids[1]).into_bytes(), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let bad = client.post_form("/gallery/delete", &[("ids", "../../etc")]).await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
    assert_eq!(ids_of(&client.api(Method::GET, "/api/v1/gallery", None, &[]).await.json()).len(), 1);
}

#[tokio::test]
async fn share_links_are_off_by_default_revocable_unguessable_and_the_owners_only() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let app = App::new(backend).await;
        let mut owner = app.client();
        owner.signed_up("sharer@example.org").await;
        let id = generated(&app, &mut owner, 1).await.remove(0);
        let share = format!("/api/v1/images/{id}/share");

        let page = owner.get(&format!("/images/{id}")).await.text();
        assert!(page.contains(r#"name="shared" value="true""#) && !page.contains("/s/"), "off by default");
        assert_eq!(owner.api(Method::GET, &share, None, &[]).await.status, StatusCode::NOT_FOUND);

        let mut mallory = app.client();
        mallory.signed_up("mallory@example.org").await;
        assert_eq!(mallory.api(Method::POST, &share, None, &[]).await.error_code(), "not_found");
        assert_eq!(mallory.post_form(&format!("/images/{id}/share"), &[("shared", "true")]).await.status, StatusCode::NOT_FOUND);
        assert_eq!(owner.api(Method::GET, &share, None, &[]).await.status, StatusCode::NOT_FOUND, "still off");

        let created = owner.api(Method::POST, &share, None, &[]).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
        let link = created.json();
        let token = link["token"].as_str().unwrap().to_string();
        assert_eq!(token.len(), 43);
        assert_eq!(link["url"], format!("http://localhost:8080/s/{token}"));
        let again = owner.api(Method::POST, &share, None, &[]).await;
        assert_eq!((again.status, again.json()["token"].as_str().unwrap()), (StatusCode::OK, token.as_str()), "one link per image");
        assert!(owner.get(&format!("/images/{id}")).await.text().contains(&format!("/s/{token}")));

        // Anyone with the link sees the image and nothing of the account.
        let mut visitor = app.client();
        let shared = visitor.get(&format!("/s/{token}")).await;
        assert_eq!(shared.status, StatusCode::OK);
        let text = shared.text();
        assert!(text.contains(&format!("/s/{token}/image")));
        for private in ["sharer@example.org", "Test Person", "lighthouse", id.as_str()] {
            assert!(!text.contains(private), "the share page shows {private}");
        }
        let bytes = visitor.get(&format!("/s/{token}/image")).await;
        assert_eq!(bytes.body, owner.get(&format!("/api/v1/assets/{id}")).await.body);
        assert_eq!(bytes.headers["cache-control"], "private, no-store");
        let reported = visitor.post_form(&format!("/s/{token}/report"), &[("reason", "not what it seems")]).await;
        assert_eq!(reported.status, StatusCode::OK, "{}", reported.text());
        let reports = app.state.store.reports(Some("open"), 10).await.unwrap();
        assert_eq!((reports.len(), reports[0].reporter_id.as_deref(), reports[0].asset_id.as_str()), (1, None, id.as_str()));
        let empty = visitor.post_form(&format!("/s/{token}/report"), &[("reason", "  ")]).await;
        assert_eq!(empty.status, StatusCode::BAD_REQUEST);

        // Guessing finds nothing.
        for guess in ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "short", &token[..42], format!("{token}x").as_str()] {
            assert_eq!(visitor.get(&format!("/s/{guess}")).await.status, StatusCode::NOT_FOUND, "{guess}");
        }

        // Revoked: gone at once.
        assert_eq!(mallory.api(Method::DELETE, &share, None, &[]).await.status, StatusCode::NOT_FOUND);
        assert_eq!(visitor.get(&format!("/s/{token}")).await.status, StatusCode::OK, "someone else cannot revoke it");
        assert_eq!(owner.api(Method::DELETE, &share, None, &[]).await.status, StatusCode::NO_CONTENT);
        assert_eq!(visitor.get(&format!("/s/{token}")).await.status, StatusCode::NOT_FOUND);
        assert_eq!(visitor.get(&format!("/s/{token}/image")).await.status, StatusCode::NOT_FOUND);
        assert_eq!(owner.api(Method::DELETE, &share, None, &[]).await.status, StatusCode::NOT_FOUND);

        // The page's switch; the link listed for export; gone with its image.
        let on = owner.post_form(&format!("/images/{id}/share"), &[("shared", "true")]).await;
        assert_eq!(on.location(), format!("/images/{id}#share"));
        let user_id = owner.api(Method::GET, "/api/v1/account", None, &[]).await.json()["id"].as_str().unwrap().to_string();
        let links = app.state.store.share_links_of_user(&user_id).await.unwrap();
        assert_eq!(links.len(), 1);
        assert_ne!(links[0].token, token, "a new link, not the revoked one");
        let new_token = links[0].token.clone();
        assert_eq!(visitor.get(&format!("/s/{new_token}")).await.status, StatusCode::OK);
        assert_eq!(owner.post_form(&format!("/images/{id}/delete"), &[]).await.status, StatusCode::SEE_OTHER);
        assert_eq!(visitor.get(&format!("/s/{new_token}")).await.status, StatusCode::NOT_FOUND);
        assert!(app.state.store.share_links_of_user(&user_id).await.unwrap().is_empty(), "the link left with its image");
    }
}

#[tokio::test]
async fn downloads_convert_to_png_jpeg_or_webp_on_the_fly() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut client = app.client();
    client.signed_up("download@example.org").await;
    let id = generated(&app, &mut client, 1).await.remove(0);
    let stored = client.get(&format!("/api/v1/assets/{id}")).await;
    assert_eq!(stored.headers["content-type"], "image/png");
    let original = imaging::decode(&stored.body, &Default::default()).unwrap().image;

    let same = client.get(&format!("/api/v1/assets/{id}?download=1&format=png")).await;
    assert_eq!(same.body, stored.body, "the stored format is served as stored");
    for (format, content_type, extension, magic) in
        [("jpeg", "image/jpeg", "jpg", &b"\xFF\xD8\xFF"[..]), ("webp", "image/webp", "webp", &b"RIFF"[..])]
    {
        let resp = client.get(&format!("/api/v1/assets/{id}?download=1&format={format}")).await;
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(resp.headers["content-type"], content_type);
        assert_eq!(resp.headers["content-disposition"], format!("attachment; filename=\"atelier-{id}.{extension}\"").as_str());
        assert!(resp.body.starts_with(magic), "{format} bytes");
        let converted = imaging::decode(&resp.body, &Default::default()).unwrap().image;
        assert_eq!(converted.dimensions(), original.dimensions());
        let (a, b) = (original.get_pixel(128, 128).0, converted.get_pixel(128, 128).0);
        assert!((0..3).all(|c| a[c].abs_diff(b[c]) < 24), "the same picture: {a:?} vs {b:?}");
    }
    let bad = client.get(&format!("/api/v1/assets/{id}?format=gif")).await;
    assert_eq!((bad.status, bad.error_code()), (StatusCode::BAD_REQUEST, "invalid_input".to_string()));
    let page = client.get(&format!("/images/{id}")).await.text();
    for format in ["png", "jpeg", "webp"] {
        assert!(page.contains(&format!("?download=1&amp;format={format}")), "{format} link");
    }
    let mut other = app.client();
    other.signed_up("nosy@example.org").await;
    assert_eq!(other.get(&format!("/api/v1/assets/{id}?format=jpeg")).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_generate_page_offers_quality_n_model_and_style_previews_and_prices_them() {
    let billing = billing::BillingConfig { enabled: true, signup_grant: 100, ..Default::default() };
    let app = App::with_config(TestBackend::Sqlite, WebConfig { billing, ..WebConfig::default() }).await;
    let mut client = app.client();
    client.signed_up("choices@example.org").await;
    let page = client.get("/generate").await.text();
    for part in [
        r#"name="quality""#,
        r#"<option value="hd">"#,
        r#"name="n" min="1" max="4""#,
        r#"<option value="atelier-procedural-v0" selected>"#,
        r#"src="/static/styles/watercolor.png""#,
        r#"id="mask-canvas""#,
        r#"id="dropzone""#,
    ] {
        assert!(page.contains(part), "{part}");
    }
    // The live price table: credits per image by model, size and quality.
    let prices = page.split(r#"data-prices=""#).nth(1).unwrap().split('"').next().unwrap().replace("&quot;", "\"");
    let prices: Value = serde_json::from_str(&prices).unwrap();
    assert_eq!(prices["atelier-procedural-v0"]["1536x1024"], json!({"standard": 3, "hd": 6}));

    let preview = client.get("/static/styles/watercolor.png").await;
    assert_eq!(preview.headers["content-type"], "image/png");
    let img = imaging::decode(&preview.body, &Default::default()).unwrap().image;
    assert_eq!(img.dimensions(), (96, 96));
    assert_ne!(preview.body, client.get("/static/styles/noir.png").await.body, "each style its own preview");
    assert_eq!(client.get("/static/styles/glitter.png").await.status, StatusCode::NOT_FOUND);

    let hd = client.submit(json!({"prompt": "fox", "size": "1536x1024", "quality": "hd", "n": 2})).await;
    assert_eq!((hd["cost"].as_i64(), hd["params"]["quality"].as_str()), (Some(12), Some("hd")));
    let form =
        client.post_form("/generate", &[("prompt", "fox"), ("size", "512x512"), ("quality", "hd"), ("n", "3"), ("style", "noir")]).await;
    assert_eq!(form.status, StatusCode::SEE_OTHER, "{}", form.text());
    for (body, what) in [
        (json!({"prompt": "fox", "quality": "ultra"}), "quality"),
        (json!({"prompt": "fox", "model": "dall-e-9"}), "model"),
        (json!({"prompt": "fox", "partial_images": 4}), "partial_images"),
        (json!({"prompt": "fox", "n": 5}), "n"),
    ] {
        let resp = client.api(Method::POST, "/api/v1/tasks", Some(body), &[]).await;
        assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "invalid_input".to_string()), "{what}");
    }
    let bad = client.post_form("/generate", &[("prompt", "fox"), ("quality", "ultra")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text().contains(r#"data-code="invalid_input""#));

    // "Edit with a mask" opens the generate page on that image; someone else's is not found.
    let id = generated(&app, &mut client, 1).await.remove(0);
    let edit = client.get(&format!("/generate?source={id}")).await.text();
    assert!(edit.contains(&format!(r#"data-source="{id}" data-source-width="256" data-source-height="256""#)));
    let mut other = app.client();
    other.signed_up("peek@example.org").await;
    assert_eq!(other.get(&format!("/generate?source={id}")).await.status, StatusCode::NOT_FOUND);
}

/// The next event of an SSE body: (name, data).
async fn next_event(
    body: &mut (impl futures_util::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
    buf: &mut String,
) -> (String, Value) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let raw: String = buf.drain(..end + 2).collect();
            let field = |name: &str| raw.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_string());
            if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                return (event, serde_json::from_str(&data).unwrap());
            }
            continue;
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(60), body.next()).await.expect("an event").unwrap().unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_account_stream_carries_progress_preview_frames_and_the_result_of_the_accounts_tasks_only() {
    let app = App::new(TestBackend::Sqlite).await;
    let mut alice = app.client();
    alice.signed_up("alice@example.org").await;
    let mut bob = app.client();
    bob.signed_up("bob@example.org").await;
    let mut alice_stream = alice.open("/api/v1/events").await.into_body().into_data_stream();
    let mut bob_stream = bob.open("/api/v1/events").await.into_body().into_data_stream();
    let (mut abuf, mut bbuf) = (String::new(), String::new());
    assert_eq!(next_event(&mut alice_stream, &mut abuf).await.0, "ready");
    assert_eq!(next_event(&mut bob_stream, &mut bbuf).await.0, "ready");

    let task = alice.submit(json!({"prompt": "a harbour", "size": "256x256", "partial_images": 2})).await;
    let id = task["id"].as_str().unwrap().to_string();
    app.run_tasks().await;
    // The worker already finished: the stream tells the frames, then the result.
    let mut partials = Vec::new();
    let done = loop {
        let (event, data) = next_event(&mut alice_stream, &mut abuf).await;
        assert_eq!(data["id"], id.as_str(), "{event}");
        match event.as_str() {
            "status" => {}
            "partial" => partials.push(data),
            "done" => break data,
            other => panic!("unexpected event {other}"),
        }
    };
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(partials.len(), 2, "both preview frames");
    for frame in &partials {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD.decode(frame["b64"].as_str().unwrap()).unwrap();
        assert_eq!(imaging::decode(&bytes, &Default::default()).unwrap().image.dimensions(), (256, 256));
    }

    // Bob's stream heard nothing of Alice's task: its first event is his own.
    let mine = bob.submit(json!({"prompt": "a meadow", "size": "256x256"})).await;
    app.run_tasks().await;
    let (_, data) = next_event(&mut bob_stream, &mut bbuf).await;
    assert_eq!(data["id"], mine["id"]);
    assert_eq!(app.client().get("/api/v1/events").await.status, StatusCode::UNAUTHORIZED);
}

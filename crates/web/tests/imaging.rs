//! Uploads and image actions through the HTTP surface: what is stored is
//! upright and metadata-free (C11), hostile files are refused with their code
//! and leave nothing behind, and edit / variation / upscale / restyle each
//! yield a decodable image of the asked size (C09).

mod common;

use axum::http::{Method, StatusCode};
use common::{App, Client};
use imaging::{Rgba, RgbaImage};
use serde_json::{json, Value};
use store::testing::TestBackend;

const SQLITE: TestBackend = TestBackend::Sqlite;

/// A TIFF/EXIF block with camera make/model, an orientation and a GPS position.
fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut t = b"II*\0\x08\0\0\0".to_vec();
    let entry = |t: &mut Vec<u8>, tag: u16, typ: u16, count: u32, value: u32| {
        for part in [&tag.to_le_bytes()[..], &typ.to_le_bytes(), &count.to_le_bytes(), &value.to_le_bytes()] {
            t.extend_from_slice(part);
        }
    };
    t.extend_from_slice(&4u16.to_le_bytes());
    entry(&mut t, 0x010F, 2, 6, 62);
    entry(&mut t, 0x0110, 2, 7, 68);
    entry(&mut t, 0x0112, 3, 1, u32::from(orientation));
    entry(&mut t, 0x8825, 4, 1, 76);
    t.extend_from_slice(&[0; 4]);
    t.extend_from_slice(b"Canon\0EOS R5\0\0");
    t.extend_from_slice(&4u16.to_le_bytes());
    entry(&mut t, 0x0001, 2, 2, u32::from_le_bytes(*b"N\0\0\0"));
    entry(&mut t, 0x0002, 5, 3, 130);
    entry(&mut t, 0x0003, 2, 2, u32::from_le_bytes(*b"E\0\0\0"));
    entry(&mut t, 0x0004, 5, 3, 154);
    t.extend_from_slice(&[0; 4]);
    for v in [48u32, 1, 51, 1, 30, 1, 2, 1, 17, 1, 40, 1] {
        t.extend_from_slice(&v.to_le_bytes());
    }
    t
}

/// A 64x32 JPEG (left half red, right half blue) carrying GPS EXIF with orientation 6.
fn phone_photo() -> Vec<u8> {
    let img = RgbaImage::from_fn(64, 32, |x, _| if x < 32 { Rgba([220, 20, 20, 255]) } else { Rgba([20, 20, 220, 255]) });
    let jpeg = imaging::encode_jpeg(&img, 95).unwrap().bytes;
    let app0 = 4 + usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    let tiff = exif_tiff(6);
    let mut out = jpeg[..app0].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((8 + tiff.len()) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
    out.extend_from_slice(&jpeg[app0..]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn upload_raw(client: &mut Client, bytes: Vec<u8>, content_type: &str) -> common::Resp {
    let csrf = client.csrf();
    client.send(Method::POST, "/api/v1/uploads", Some(content_type), bytes, &[("x-csrf-token", &csrf)]).await
}

async fn upload_multipart(client: &mut Client, bytes: &[u8], filename: &str, content_type: &str) -> common::Resp {
    let boundary = "atelier-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let csrf = client.csrf();
    client
        .send(Method::POST, "/api/v1/uploads", Some(&format!("multipart/form-data; boundary={boundary}")), body, &[("x-csrf-token", &csrf)])
        .await
}

fn decode(bytes: &[u8]) -> RgbaImage {
    imaging::decode(bytes, &imaging::DecodeLimits::default()).expect("a decodable image").image
}

async fn finished(app: &App, client: &mut Client, task: &Value) -> Value {
    app.run_tasks().await;
    let id = task["id"].as_str().unwrap();
    let done = client.api(Method::GET, &format!("/api/v1/tasks/{id}"), None, &[]).await.json();
    assert_eq!(done["status"], "succeeded", "{done}");
    done
}

async fn output_image(client: &mut Client, done: &Value, i: usize) -> RgbaImage {
    let url = done["outputs"][i]["url"].as_str().unwrap().to_string();
    decode(&client.get(&url).await.body)
}

async fn action(client: &mut Client, path: &str, body: Value) -> Value {
    let resp = client.api(Method::POST, path, Some(body), &[]).await;
    assert_eq!(resp.status, StatusCode::ACCEPTED, "{path}: {}", resp.text());
    resp.json()
}

#[tokio::test]
async fn c11_uploaded_photo_is_stored_upright_without_location_or_camera_data() {
    for backend in [TestBackend::Sqlite, TestBackend::Postgres] {
        let app = App::new(backend).await;
        let mut client = app.client();
        client.signed_up("photo@example.org").await;
        let photo = phone_photo();
        assert!(contains(&photo, b"Canon") && contains(&photo, b"Exif"));

        let resp = upload_multipart(&mut client, &photo, "IMG_0001.JPG", "image/jpeg").await;
        assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
        let up = resp.json();
        assert_eq!((up["width"].as_i64(), up["height"].as_i64()), (Some(32), Some(64)), "stored upright");
        assert_eq!(up["content_type"], "image/jpeg");

        let stored = client.get(up["url"].as_str().unwrap()).await.body;
        for marker in [&b"Exif"[..], b"Canon", b"EOS R5", b"II*\0", b"MM\0*"] {
            assert!(!contains(&stored, marker), "stored upload still contains {:?}", String::from_utf8_lossy(marker));
        }
        let img = decode(&stored);
        assert_eq!(img.dimensions(), (32, 64));
        let (top, bottom) = (img.get_pixel(16, 8).0, img.get_pixel(16, 56).0);
        assert!(top[0] > 150 && bottom[2] > 150, "rotated the right way: top {top:?}, bottom {bottom:?}");
        // A WebP thumbnail is made once, at upload.
        let thumb = client.get(up["thumbnail_url"].as_str().unwrap()).await;
        assert_eq!(thumb.headers["content-type"], "image/webp");
        assert!(!contains(&thumb.body, b"EXIF") && !contains(&thumb.body, b"Canon"));
    }
}

#[tokio::test]
async fn hostile_uploads_are_refused_with_their_code_and_leave_nothing() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("hostile@example.org").await;

    // A text file that says it is a PNG, by name and by content type.
    let resp = upload_multipart(&mut client, b"just some words\n", "holiday.png", "image/png").await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "invalid_image".to_string()));

    // A PNG whose header claims 100000 x 100000.
    let mut huge = imaging::encode_png(&RgbaImage::from_pixel(2, 2, Rgba([1, 2, 3, 255]))).unwrap().bytes;
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let sum = crc32(&huge[12..29]);
    huge[29..33].copy_from_slice(&sum.to_be_bytes());
    let resp = upload_raw(&mut client, huge, "image/png").await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::PAYLOAD_TOO_LARGE, "image_too_large".to_string()));

    // A truncated JPEG.
    let photo = phone_photo();
    let resp = upload_raw(&mut client, photo[..photo.len() * 2 / 3].to_vec(), "image/jpeg").await;
    assert_eq!((resp.status, resp.error_code()), (StatusCode::BAD_REQUEST, "invalid_image".to_string()));

    // An empty body, and a GIF (not accepted).
    let resp = upload_raw(&mut client, Vec::new(), "image/png").await;
    assert_eq!(resp.error_code(), "invalid_image");
    let resp = upload_raw(&mut client, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(), "image/gif").await;
    assert_eq!(resp.error_code(), "invalid_image");

    assert!(app.object_files().is_empty(), "nothing half-written: {:?}", app.object_files());
    // Over the byte limit: refused by the body limit or the image limit, never stored.
    let small = App::with_config(
        SQLITE,
        web::WebConfig { decode_limits: imaging::DecodeLimits { max_bytes: 100, ..Default::default() }, ..Default::default() },
    )
    .await;
    let mut c = small.client();
    c.signed_up("small@example.org").await;
    let resp = upload_raw(&mut c, phone_photo(), "image/jpeg").await;
    assert!(matches!(resp.error_code().as_str(), "image_too_large" | "payload_too_large"), "{}", resp.text());
    assert_eq!(resp.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(small.object_files().is_empty());
}

#[tokio::test]
async fn c09_edit_variation_upscale_and_restyle_yield_images_of_the_asked_size() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("actions@example.org").await;
    let task = client.submit(json!({"prompt": "a lake among mountains at dawn", "size": "256x256", "seed": 3})).await;
    let done = finished(&app, &mut client, &task).await;
    let source_id = done["outputs"][0]["id"].as_str().unwrap().to_string();
    let source = output_image(&mut client, &done, 0).await;
    assert_eq!(source.dimensions(), (256, 256));

    // Upscale 4x.
    let t = action(&mut client, &format!("/api/v1/images/{source_id}/upscale"), json!({"factor": 4})).await;
    assert_eq!(t["kind"], "upscale");
    let up = finished(&app, &mut client, &t).await;
    assert_eq!(output_image(&mut client, &up, 0).await.dimensions(), (1024, 1024));
    assert_eq!((up["outputs"][0]["width"].as_i64(), up["outputs"][0]["height"].as_i64()), (Some(1024), Some(1024)));

    // Restyle.
    let t = action(
        &mut client,
        &format!("/api/v1/images/{source_id}/restyle"),
        json!({"style": "watercolor", "output_format": "webp", "output_compression": 80}),
    )
    .await;
    let re = finished(&app, &mut client, &t).await;
    let url = re["outputs"][0]["url"].as_str().unwrap().to_string();
    let served = client.get(&url).await;
    assert_eq!(served.headers["content-type"], "image/webp");
    assert_eq!(decode(&served.body).dimensions(), (256, 256));

    // Variations at another size.
    let t = action(&mut client, &format!("/api/v1/images/{source_id}/variations"), json!({"n": 2, "size": "512x512", "seed": 9})).await;
    let va = finished(&app, &mut client, &t).await;
    assert_eq!(va["outputs"].as_array().unwrap().len(), 2);
    for i in 0..2 {
        assert_eq!(output_image(&mut client, &va, i).await.dimensions(), (512, 512));
    }

    // Edit with an uploaded mask: pixels outside the mask are the source's exactly.
    let mask = RgbaImage::from_fn(256, 256, |x, y| Rgba([0, 0, 0, if (96..224).contains(&x) && (32..128).contains(&y) { 0 } else { 255 }]));
    let resp = upload_raw(&mut client, imaging::encode_png(&mask).unwrap().bytes, "application/octet-stream").await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let mask_id = resp.json()["id"].as_str().unwrap().to_string();
    let t = action(&mut client, &format!("/api/v1/images/{source_id}/edits"), json!({"prompt": "a red moon", "mask": mask_id, "seed": 4}))
        .await;
    let ed = finished(&app, &mut client, &t).await;
    let edited = output_image(&mut client, &ed, 0).await;
    assert_eq!(edited.dimensions(), (256, 256));
    let mut changed = 0;
    for (x, y, p) in edited.enumerate_pixels() {
        if mask.get_pixel(x, y).0[3] != 0 {
            assert_eq!(p, source.get_pixel(x, y), "({x},{y}) outside the mask changed");
        } else if p != source.get_pixel(x, y) {
            changed += 1;
        }
    }
    assert!(changed > 128 * 96 / 2, "the masked area was not repainted ({changed} pixels)");

    // An upload larger than the engines render needs an explicit size.
    let wide = RgbaImage::from_pixel(5000, 40, Rgba([9, 99, 199, 255]));
    let resp = upload_raw(&mut client, imaging::encode_png(&wide).unwrap().bytes, "image/png").await;
    let wide_id = resp.json()["id"].as_str().unwrap().to_string();
    for path in ["variations", "edits"] {
        let resp = client
            .api(
                Method::POST,
                &format!("/api/v1/images/{wide_id}/{path}"),
                Some(json!({"prompt": "x"}).as_object().map(|o| if path == "edits" { json!(o) } else { json!({}) }).unwrap()),
                &[],
            )
            .await;
        assert_eq!(resp.error_code(), "invalid_input", "{path}: {}", resp.text());
    }

    // Another account cannot act on these images.
    let mut other = app.client();
    other.signed_up("other@example.org").await;
    let resp = other.api(Method::POST, &format!("/api/v1/images/{source_id}/upscale"), Some(json!({})), &[]).await;
    assert_eq!(resp.error_code(), "not_found");
    // Bad parameters are refused before anything is queued.
    for (path, body) in [
        ("upscale", json!({"factor": 3})),
        ("restyle", json!({"style": "none"})),
        ("restyle", json!({"style": "sepia"})),
        ("edits", json!({"prompt": " "})),
    ] {
        let resp = client.api(Method::POST, &format!("/api/v1/images/{source_id}/{path}"), Some(body), &[]).await;
        assert_eq!(resp.error_code(), "invalid_input", "{path}");
    }
}

#[tokio::test]
async fn c09_upscale_to_4k_from_the_image_page() {
    let app = App::new(SQLITE).await;
    let mut client = app.client();
    client.signed_up("fourk@example.org").await;
    let task = client.submit(json!({"prompt": "a city skyline at night", "size": "1024x1024", "seed": 1})).await;
    let done = finished(&app, &mut client, &task).await;
    let id = done["outputs"][0]["id"].as_str().unwrap().to_string();

    let page = client.get(&format!("/images/{id}")).await;
    assert!(page.text().contains(&format!("action=\"/images/{id}/upscale\"")), "the image page offers the upscale");
    assert!(page.text().contains(&format!("action=\"/images/{id}/restyle\"")));
    let resp = client.post_form(&format!("/images/{id}/upscale"), &[]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    let task_path = resp.location();
    assert!(task_path.starts_with("/tasks/"), "{task_path}");
    app.run_tasks().await;
    let up = client.api(Method::GET, &format!("/api/v1{task_path}"), None, &[]).await.json();
    assert_eq!(up["status"], "succeeded", "{up}");
    let img = output_image(&mut client, &up, 0).await;
    assert_eq!(img.dimensions(), (4096, 4096));
    // The 4K image cannot be upscaled again, and its page does not offer it.
    let big = up["outputs"][0]["id"].as_str().unwrap().to_string();
    let resp = client.api(Method::POST, &format!("/api/v1/images/{big}/upscale"), Some(json!({"factor": 2})), &[]).await;
    assert_eq!(resp.error_code(), "invalid_input");
    assert!(!client.get(&format!("/images/{big}")).await.text().contains("/upscale\""));

    // Restyle from the page.
    let resp = client.post_form(&format!("/images/{id}/restyle"), &[("style", "pixel_art")]).await;
    assert_eq!(resp.status, StatusCode::SEE_OTHER);
    app.run_tasks().await;
    let re = client.api(Method::GET, &format!("/api/v1{}", resp.location()), None, &[]).await.json();
    assert_eq!(re["status"], "succeeded");
    assert_eq!(output_image(&mut client, &re, 0).await.dimensions(), (1024, 1024));
}

#[tokio::test]
async fn c07_an_upload_is_read_only_by_tasks_of_its_owner() {
    let app = App::new(SQLITE).await;
    let mut owner = app.client();
    owner.signed_up("owner@example.org").await;
    let picture = RgbaImage::from_fn(64, 64, |x, y| Rgba([x as u8 * 4, y as u8 * 4, 90, 255]));
    let resp = upload_raw(&mut owner, imaging::encode_png(&picture).unwrap().bytes, "image/png").await;
    assert_eq!(resp.status, StatusCode::CREATED, "{}", resp.text());
    let upload_id = resp.json()["id"].as_str().unwrap().to_string();

    let mut other = app.client();
    other.signed_up("other@example.org").await;
    let task = other.submit(json!({"prompt": "a quiet harbour", "size": "256x256", "seed": 1})).await;
    let own_image = finished(&app, &mut other, &task).await["outputs"][0]["id"].as_str().unwrap().to_string();
    let attempts = [
        (format!("/api/v1/images/{upload_id}/edits"), json!({"prompt": "a red moon"})),
        (format!("/api/v1/images/{upload_id}/variations"), json!({"n": 1})),
        (format!("/api/v1/images/{upload_id}/upscale"), json!({"factor": 2})),
        (format!("/api/v1/images/{upload_id}/restyle"), json!({"style": "watercolor"})),
        // Someone else's upload as the mask of one's own image.
        (format!("/api/v1/images/{own_image}/edits"), json!({"prompt": "a red moon", "mask": upload_id})),
    ];
    for (path, body) in attempts {
        let resp = other.api(Method::POST, &path, Some(body), &[]).await;
        assert_eq!(resp.status, StatusCode::NOT_FOUND, "{path}: {}", resp.text());
        assert_eq!(resp.error_code(), "not_found");
    }
    let history = other.api(Method::GET, "/api/v1/tasks", None, &[]).await.json();
    assert_eq!(history["items"].as_array().unwrap().len(), 1, "no task was queued on someone else's upload");
    assert_eq!(app.run_tasks().await, 0);

    // The owner's own tasks read it.
    let t = action(&mut owner, &format!("/api/v1/images/{upload_id}/variations"), json!({"n": 1, "size": "256x256"})).await;
    assert_eq!(finished(&app, &mut owner, &t).await["status"], "succeeded");
}

use std::sync::{Arc, Mutex};

use domain::params::{Background, STYLES};
use domain::ErrorCode;
use engines::{EditRequest, Engine, EngineImage, GenerateRequest, Observer, PartialImage, ProceduralEngine, VariationRequest};
use imaging::{Rgba, RgbaImage};

fn req(prompt: &str, width: u32, height: u32, style: &str, seed: u64, n: u32) -> GenerateRequest {
    GenerateRequest { prompt: prompt.into(), width, height, style: style.into(), seed, n, ..Default::default() }
}

async fn generate(r: &GenerateRequest) -> Vec<EngineImage> {
    ProceduralEngine.generate(r, Observer::silent()).await.unwrap()
}

fn distinct_colors(img: &RgbaImage) -> usize {
    let mut seen: Vec<[u8; 4]> = img.pixels().map(|p| p.0).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

/// Mean absolute difference per channel, 0..255.
fn mean_diff(a: &RgbaImage, b: &RgbaImage) -> f64 {
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
    sum as f64 / a.as_raw().len() as f64
}

fn mean_rgb(img: &RgbaImage) -> [f64; 3] {
    let mut s = [0.0; 3];
    for p in img.pixels() {
        for c in 0..3 {
            s[c] += f64::from(p.0[c]);
        }
    }
    s.map(|v| v / (img.width() * img.height()) as f64)
}

#[test]
fn names_are_stable_and_honest() {
    let engine: Arc<dyn Engine> = Arc::new(ProceduralEngine);
    assert_eq!((engine.name(), engine.model()), ("procedural", "atelier-procedural-v1"));
    assert_eq!(engine.label(), "built-in procedural engine");
    let caps = engine.capabilities();
    assert!(caps.edit && caps.variation && caps.transparent_background && caps.max_partial_images == 3);
}

#[tokio::test]
async fn renders_exact_sizes_opaque() {
    for (w, h) in [(1024, 1024), (1536, 1024), (1024, 1536)] {
        let out = generate(&req("a lighthouse at dusk", w, h, "none", 7, 1)).await;
        assert_eq!(out.len(), 1);
        let img = &out[0].image;
        assert_eq!(img.dimensions(), (w, h));
        assert!(img.pixels().all(|p| p.0[3] == 255), "{w}x{h} must be opaque");
        assert!(distinct_colors(img) > 1000, "{w}x{h} looks flat");
    }
}

#[tokio::test]
async fn same_prompt_and_seed_give_identical_bytes() {
    let r = req("a fox in the snow", 384, 256, "forest", 42, 2);
    let (a, b) = (generate(&r).await, generate(&r).await);
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    assert_ne!(a[0], a[1], "images of one request differ from each other");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(imaging::encode_png(&x.image).unwrap().bytes, imaging::encode_png(&y.image).unwrap().bytes);
    }
    // Image i does not depend on n.
    let single = generate(&GenerateRequest { n: 1, ..r.clone() }).await;
    assert_eq!(single[0], a[0]);
}

#[tokio::test]
async fn different_prompts_give_measurably_different_images() {
    let prompts = [
        "snowy mountains at dawn",
        "a lighthouse by the sea at sunset",
        "a misty lake at noon",
        "pine forest at night",
        "golden desert dunes",
        "a city skyline at night",
        "a nebula in deep space",
        "abstract red and blue shapes",
        "portrait of a wanderer",
        "a meadow of flowers",
    ];
    let mut images = Vec::new();
    for p in prompts {
        images.push(generate(&req(p, 256, 192, "none", 1, 1)).await.remove(0).image);
    }
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            let d = mean_diff(&images[i], &images[j]);
            assert!(d > 12.0, "{:?} vs {:?}: mean difference only {d:.1}/255", prompts[i], prompts[j]);
        }
    }
    // Another seed, same prompt: a different picture too.
    let other_seed = generate(&req(prompts[0], 256, 192, "none", 2, 1)).await.remove(0).image;
    assert!(mean_diff(&images[0], &other_seed) > 4.0);
}

#[tokio::test]
async fn the_prompt_words_steer_colour_and_light() {
    let night = mean_rgb(&generate(&req("mountains at night", 192, 128, "none", 3, 1)).await[0].image);
    let noon = mean_rgb(&generate(&req("mountains at noon", 192, 128, "none", 3, 1)).await[0].image);
    assert!(night.iter().sum::<f64>() + 150.0 < noon.iter().sum::<f64>(), "night {night:?} vs noon {noon:?}");
    let red = mean_rgb(&generate(&req("a crimson red valley", 192, 128, "none", 3, 1)).await[0].image);
    let blue = mean_rgb(&generate(&req("a deep blue valley", 192, 128, "none", 3, 1)).await[0].image);
    assert!(red[0] - red[2] > blue[0] - blue[2] + 20.0, "red {red:?} vs blue {blue:?}");
}

#[tokio::test]
async fn every_style_renders_and_differs() {
    let mut images = Vec::new();
    for style in STYLES {
        let out = generate(&req("mountains", 256, 192, style, 3, 1)).await;
        let img = &out[0].image;
        assert_eq!(img.dimensions(), (256, 192), "{style}");
        // Pixel art has a deliberately small palette.
        let floor = if *style == "pixel_art" { 12 } else { 100 };
        assert!(distinct_colors(img) > floor, "{style} looks flat");
        images.push(img.clone());
    }
    for i in 0..images.len() {
        for j in i + 1..images.len() {
            assert_ne!(images[i], images[j], "{} == {}", STYLES[i], STYLES[j]);
        }
    }
    // Noir is grey.
    let noir = &generate(&req("mountains", 128, 128, "noir", 3, 1)).await[0].image;
    assert!(noir.pixels().all(|p| p.0[0].abs_diff(p.0[1]) <= 1 && p.0[1].abs_diff(p.0[2]) <= 1));
    // A filter style is the natural scene, filtered.
    let natural = &generate(&req("mountains", 128, 96, "none", 3, 1)).await[0].image;
    let sketch = &generate(&req("mountains", 128, 96, "sketch", 3, 1)).await[0].image;
    assert_eq!(sketch, &imaging::styles::apply("sketch", natural, 3).unwrap());
}

#[tokio::test]
async fn progress_is_monotonic_and_reaches_100() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let observer = Observer::new(Arc::new(move |p| sink.lock().unwrap().push(p)));
    let out = ProceduralEngine.generate(&req("waves", 200, 120, "ocean", 5, 3), observer).await.unwrap();
    assert_eq!(out.len(), 3);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100));
    assert!(seen.iter().all(|&p| p <= 100));
}

#[tokio::test]
async fn partial_images_stream_before_the_final_one() {
    let frames = Arc::new(Mutex::new(Vec::<PartialImage>::new()));
    let sink = frames.clone();
    let observer = Observer::silent().with_partials(Arc::new(move |f| sink.lock().unwrap().push(f)));
    let r = GenerateRequest { partial_images: 3, ..req("a city skyline at night", 240, 160, "none", 8, 2) };
    let out = ProceduralEngine.generate(&r, observer).await.unwrap();
    let frames = frames.lock().unwrap().clone();
    assert_eq!(frames.len(), 6, "3 partials for each of 2 images");
    for (k, f) in frames.iter().enumerate() {
        assert_eq!((f.index, f.partial_index), ((k / 3) as u32, (k % 3) as u32));
        assert_eq!(f.image.dimensions(), (240, 160));
        assert_ne!(f.image, out[f.index as usize].image, "a partial is not the final image");
    }
    // Frames converge towards the final image.
    let last = &out[0].image;
    assert!(mean_diff(&frames[0].image, last) > mean_diff(&frames[2].image, last));
    // Without partials the final pixels are the same.
    assert_eq!(generate(&req("a city skyline at night", 240, 160, "none", 8, 2)).await, out);
}

#[tokio::test]
async fn transparent_background_leaves_the_sky_clear() {
    let r = GenerateRequest { background: Background::Transparent, ..req("a portrait in the mountains", 200, 200, "none", 4, 1) };
    let img = generate(&r).await.remove(0).image;
    assert_eq!(img.get_pixel(100, 2).0[3], 0, "sky is transparent");
    assert_eq!(img.get_pixel(100, 199).0[3], 255, "foreground is opaque");
    assert!(img.pixels().any(|p| p.0[3] > 0 && p.0[3] < 255), "edges are anti-aliased");
}

fn pattern(w: u32, h: u32) -> RgbaImage {
    RgbaImage::from_fn(w, h, |x, y| Rgba([(x * 3) as u8, (y * 5) as u8, ((x + y) * 2) as u8, 255]))
}

#[tokio::test]
async fn c09_edit_fills_the_masked_area_and_keeps_every_other_pixel() {
    let base = pattern(256, 192);
    // Transparent (alpha 0) rectangle = the area to repaint.
    let mask = RgbaImage::from_fn(256, 192, |x, y| Rgba([0, 0, 0, if (64..192).contains(&x) && (48..144).contains(&y) { 0 } else { 255 }]));
    let edit = EditRequest {
        prompt: "a red moon".into(),
        images: vec![base.clone()],
        mask: Some(mask.clone()),
        width: 256,
        height: 192,
        style: "none".into(),
        seed: 5,
        n: 2,
        ..Default::default()
    };
    let out = ProceduralEngine.edit(&edit, Observer::silent()).await.unwrap();
    assert_eq!(out.len(), 2);
    for img in &out {
        assert_eq!(img.image.dimensions(), (256, 192));
        let mut changed = 0;
        for (x, y, p) in img.image.enumerate_pixels() {
            if mask.get_pixel(x, y).0[3] != 0 {
                assert_eq!(p, base.get_pixel(x, y), "pixel ({x},{y}) outside the mask changed");
            } else if p != base.get_pixel(x, y) {
                changed += 1;
            }
        }
        assert!(changed > 128 * 96 * 9 / 10, "only {changed} masked pixels were repainted");
    }
    assert_ne!(out[0], out[1]);
    // Deterministic.
    assert_eq!(ProceduralEngine.edit(&edit, Observer::silent()).await.unwrap(), out);
    // Without a mask, the image's own transparency is the mask.
    let mut holey = base.clone();
    for y in 0..40 {
        for x in 0..40 {
            holey.put_pixel(x, y, Rgba([0, 0, 0, 0]));
        }
    }
    let out = ProceduralEngine
        .edit(&EditRequest { images: vec![holey.clone()], mask: None, n: 1, ..edit.clone() }, Observer::silent())
        .await
        .unwrap();
    assert_eq!(out[0].image.get_pixel(100, 100), holey.get_pixel(100, 100));
    assert_eq!(out[0].image.get_pixel(10, 10).0[3], 255, "the hole is filled");
}

#[tokio::test]
async fn c09_variations_keep_the_palette_and_change_the_picture() {
    let source = generate(&req("a purple lake at dusk", 256, 256, "none", 11, 1)).await.remove(0).image;
    let unrelated = generate(&req("golden desert dunes at noon", 256, 256, "none", 11, 1)).await.remove(0).image;
    let v = VariationRequest { image: source.clone(), width: 256, height: 256, seed: 1, n: 2, partial_images: 0, end_user: None };
    let out = ProceduralEngine.variation(&v, Observer::silent()).await.unwrap();
    assert_eq!(out.len(), 2);
    let (a, b) = (&out[0].image, &out[1].image);
    assert_eq!(a.dimensions(), (256, 256));
    assert_ne!(a, &source);
    assert_ne!(a, b);
    let colour_gap = |x: [f64; 3], y: [f64; 3]| (0..3).map(|i| (x[i] - y[i]).abs()).sum::<f64>();
    let near = colour_gap(mean_rgb(a), mean_rgb(&source));
    let far = colour_gap(mean_rgb(&unrelated), mean_rgb(&source));
    assert!(near * 2.0 < far, "variation colour gap {near:.1} vs unrelated {far:.1}");
    let other_seed = ProceduralEngine.variation(&VariationRequest { seed: 2, ..v.clone() }, Observer::silent()).await.unwrap();
    assert_ne!(other_seed[0], out[0]);
}

#[tokio::test]
async fn bad_requests_are_invalid_input() {
    for r in [
        req("x", 0, 64, "none", 1, 1),
        req("x", 64, 5000, "none", 1, 1),
        req("x", 64, 64, "sepia", 1, 1),
        req("x", 64, 64, "none", 1, 0),
        req("x", 64, 64, "none", 1, 17),
        GenerateRequest { partial_images: 4, ..req("x", 64, 64, "none", 1, 1) },
    ] {
        let err = ProceduralEngine.generate(&r, Observer::silent()).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidInput, "{r:?}");
    }
    let err = ProceduralEngine
        .edit(&EditRequest { width: 64, height: 64, n: 1, style: "none".into(), ..Default::default() }, Observer::silent())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
}

use std::sync::{Arc, Mutex};

use domain::params::STYLES;
use domain::ErrorCode;
use engines::{Engine, EngineImage, GenerateRequest, ProceduralEngine, ProgressFn};

fn req(prompt: &str, width: u32, height: u32, style: &str, seed: u64, n: u32) -> GenerateRequest {
    GenerateRequest { prompt: prompt.into(), width, height, style: style.into(), seed, n }
}

fn quiet() -> ProgressFn {
    Arc::new(|_| {})
}

async fn generate(r: &GenerateRequest) -> Vec<EngineImage> {
    ProceduralEngine.generate(r, quiet()).await.unwrap()
}

fn distinct_colors(img: &imaging::RgbaImage) -> usize {
    let mut seen: Vec<[u8; 4]> = img.pixels().map(|p| p.0).collect();
    seen.sort_unstable();
    seen.dedup();
    seen.len()
}

#[test]
fn names_are_stable() {
    let engine: Arc<dyn Engine> = Arc::new(ProceduralEngine);
    assert_eq!((engine.name(), engine.model()), ("procedural", "atelier-procedural-v0"));
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
async fn same_inputs_give_identical_pixels() {
    let r = req("a fox in the snow", 384, 256, "forest", 42, 2);
    let (a, b) = (generate(&r).await, generate(&r).await);
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    assert_ne!(a[0], a[1], "images of one request differ from each other");
    // Image i does not depend on n.
    let single = generate(&GenerateRequest { n: 1, ..r.clone() }).await;
    assert_eq!(single[0], a[0]);
}

#[tokio::test]
async fn different_seed_or_prompt_gives_a_different_image() {
    let base = generate(&req("a fox in the snow", 256, 256, "vivid", 1, 1)).await;
    let seed = generate(&req("a fox in the snow", 256, 256, "vivid", 2, 1)).await;
    let prompt = generate(&req("a fox in the snow!", 256, 256, "vivid", 1, 1)).await;
    assert_ne!(base, seed);
    assert_ne!(base, prompt);
    assert_ne!(seed, prompt);
}

#[tokio::test]
async fn every_style_renders() {
    let mut images = Vec::new();
    for style in STYLES {
        let out = generate(&req("mountains", 256, 192, style, 3, 1)).await;
        let img = &out[0].image;
        assert_eq!(img.dimensions(), (256, 192), "{style}");
        assert!(distinct_colors(img) > 200, "{style} looks flat");
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
}

#[tokio::test]
async fn progress_is_monotonic_and_reaches_100() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let progress: ProgressFn = Arc::new(move |p| sink.lock().unwrap().push(p));
    let out = ProceduralEngine.generate(&req("waves", 200, 120, "ocean", 5, 3), progress).await.unwrap();
    assert_eq!(out.len(), 3);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100));
    assert!(seen.iter().all(|&p| p <= 100));
}

#[tokio::test]
async fn bad_requests_are_invalid_input() {
    for r in [
        req("x", 0, 64, "none", 1, 1),
        req("x", 64, 5000, "none", 1, 1),
        req("x", 64, 64, "sepia", 1, 1),
        req("x", 64, 64, "none", 1, 0),
        req("x", 64, 64, "none", 1, 17),
    ] {
        let err = ProceduralEngine.generate(&r, quiet()).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidInput, "{r:?}");
    }
}

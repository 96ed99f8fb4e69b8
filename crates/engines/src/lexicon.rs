//! What the procedural engine reads in a prompt: colour words, light and
//! time-of-day words, weather, and a lexicon of subjects. Matching is on
//! lower-cased ASCII words (and a few plurals); anything else is ignored.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    Dawn,
    Day,
    Dusk,
    Night,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    Mountains,
    Sea,
    Lake,
    Forest,
    Desert,
    City,
    Space,
    Flowers,
    Abstract,
    Portrait,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Mean hue (degrees) of the colour words, and how many there were.
    pub hue: Option<f32>,
    pub colour_words: usize,
    /// A colour word meaning black/white/grey: lowers saturation.
    pub muted: bool,
    pub time: Option<Time>,
    pub fog: bool,
    pub snow: bool,
    pub rain: bool,
    pub storm: bool,
    pub fireflies: bool,
    /// In the order they first appear.
    pub subjects: Vec<Subject>,
}

impl Reading {
    pub fn has(&self, s: Subject) -> bool {
        self.subjects.contains(&s)
    }
}

const COLOURS: &[(&str, f32)] = &[
    ("red", 0.0),
    ("crimson", 348.0),
    ("scarlet", 8.0),
    ("ruby", 340.0),
    ("pink", 330.0),
    ("rose", 340.0),
    ("magenta", 300.0),
    ("purple", 275.0),
    ("violet", 270.0),
    ("lavender", 260.0),
    ("indigo", 245.0),
    ("blue", 220.0),
    ("navy", 228.0),
    ("azure", 205.0),
    ("cyan", 185.0),
    ("teal", 178.0),
    ("turquoise", 172.0),
    ("aqua", 180.0),
    ("green", 125.0),
    ("emerald", 140.0),
    ("jade", 150.0),
    ("lime", 95.0),
    ("olive", 70.0),
    ("yellow", 55.0),
    ("gold", 45.0),
    ("golden", 42.0),
    ("amber", 38.0),
    ("orange", 28.0),
    ("copper", 22.0),
    ("rust", 15.0),
    ("brown", 25.0),
    ("peach", 25.0),
    ("coral", 12.0),
];

const MUTED: &[&str] = &["black", "white", "grey", "gray", "silver", "monochrome", "ivory", "charcoal"];

const TIMES: &[(&str, Time)] = &[
    ("dawn", Time::Dawn),
    ("sunrise", Time::Dawn),
    ("morning", Time::Dawn),
    ("daybreak", Time::Dawn),
    ("day", Time::Day),
    ("daytime", Time::Day),
    ("noon", Time::Day),
    ("midday", Time::Day),
    ("sunny", Time::Day),
    ("afternoon", Time::Day),
    ("bright", Time::Day),
    ("dusk", Time::Dusk),
    ("sunset", Time::Dusk),
    ("evening", Time::Dusk),
    ("twilight", Time::Dusk),
    ("sundown", Time::Dusk),
    ("night", Time::Night),
    ("midnight", Time::Night),
    ("moon", Time::Night),
    ("moonlit", Time::Night),
    ("moonlight", Time::Night),
    ("starry", Time::Night),
    ("nocturnal", Time::Night),
    ("dark", Time::Night),
];

const SUBJECTS: &[(&str, Subject)] = &[
    ("mountain", Subject::Mountains),
    ("mountains", Subject::Mountains),
    ("peak", Subject::Mountains),
    ("peaks", Subject::Mountains),
    ("alps", Subject::Mountains),
    ("cliff", Subject::Mountains),
    ("cliffs", Subject::Mountains),
    ("volcano", Subject::Mountains),
    ("sea", Subject::Sea),
    ("ocean", Subject::Sea),
    ("waves", Subject::Sea),
    ("wave", Subject::Sea),
    ("beach", Subject::Sea),
    ("coast", Subject::Sea),
    ("shore", Subject::Sea),
    ("lighthouse", Subject::Sea),
    ("harbor", Subject::Sea),
    ("harbour", Subject::Sea),
    ("lake", Subject::Lake),
    ("river", Subject::Lake),
    ("pond", Subject::Lake),
    ("fjord", Subject::Lake),
    ("forest", Subject::Forest),
    ("forests", Subject::Forest),
    ("woods", Subject::Forest),
    ("tree", Subject::Forest),
    ("trees", Subject::Forest),
    ("pine", Subject::Forest),
    ("pines", Subject::Forest),
    ("jungle", Subject::Forest),
    ("desert", Subject::Desert),
    ("dune", Subject::Desert),
    ("dunes", Subject::Desert),
    ("sand", Subject::Desert),
    ("canyon", Subject::Desert),
    ("city", Subject::City),
    ("skyline", Subject::City),
    ("town", Subject::City),
    ("street", Subject::City),
    ("buildings", Subject::City),
    ("skyscraper", Subject::City),
    ("skyscrapers", Subject::City),
    ("tower", Subject::City),
    ("towers", Subject::City),
    ("metropolis", Subject::City),
    ("cyberpunk", Subject::City),
    ("space", Subject::Space),
    ("galaxy", Subject::Space),
    ("nebula", Subject::Space),
    ("cosmos", Subject::Space),
    ("cosmic", Subject::Space),
    ("planet", Subject::Space),
    ("planets", Subject::Space),
    ("universe", Subject::Space),
    ("astronaut", Subject::Space),
    ("flower", Subject::Flowers),
    ("flowers", Subject::Flowers),
    ("garden", Subject::Flowers),
    ("meadow", Subject::Flowers),
    ("blossom", Subject::Flowers),
    ("blossoms", Subject::Flowers),
    ("tulips", Subject::Flowers),
    ("roses", Subject::Flowers),
    ("poppies", Subject::Flowers),
    ("field", Subject::Flowers),
    ("abstract", Subject::Abstract),
    ("geometric", Subject::Abstract),
    ("shapes", Subject::Abstract),
    ("pattern", Subject::Abstract),
    ("minimalist", Subject::Abstract),
    ("bauhaus", Subject::Abstract),
    ("circles", Subject::Abstract),
    ("portrait", Subject::Portrait),
    ("person", Subject::Portrait),
    ("woman", Subject::Portrait),
    ("man", Subject::Portrait),
    ("girl", Subject::Portrait),
    ("boy", Subject::Portrait),
    ("figure", Subject::Portrait),
    ("silhouette", Subject::Portrait),
    ("face", Subject::Portrait),
    ("self-portrait", Subject::Portrait),
    ("wanderer", Subject::Portrait),
];

/// Reads a prompt.
pub fn read(prompt: &str) -> Reading {
    let lower = prompt.to_lowercase();
    let mut r = Reading::default();
    let (mut sx, mut sy) = (0.0f32, 0.0f32);
    for word in lower.split(|c: char| !(c.is_alphanumeric() || c == '-')).filter(|w| !w.is_empty()) {
        if let Some((_, hue)) = COLOURS.iter().find(|(w, _)| *w == word) {
            sx += hue.to_radians().cos();
            sy += hue.to_radians().sin();
            r.colour_words += 1;
        }
        if MUTED.contains(&word) {
            r.muted = true;
        }
        if r.time.is_none() {
            if let Some((_, t)) = TIMES.iter().find(|(w, _)| *w == word) {
                r.time = Some(*t);
            }
        }
        match word {
            "fog" | "foggy" | "mist" | "misty" | "haze" | "hazy" => r.fog = true,
            "snow" | "snowy" | "winter" | "snowfall" | "blizzard" => r.snow = true,
            "rain" | "rainy" | "drizzle" => r.rain = true,
            "storm" | "stormy" | "thunder" | "lightning" => r.storm = true,
            "fireflies" | "firefly" | "lanterns" | "sparks" | "glowing" => r.fireflies = true,
            _ => {}
        }
        if let Some((_, s)) = SUBJECTS.iter().find(|(w, _)| *w == word) {
            if !r.subjects.contains(s) {
                r.subjects.push(*s);
            }
        }
    }
    if r.colour_words > 0 && (sx.abs() > 1e-3 || sy.abs() > 1e-3) {
        r.hue = Some(sy.atan2(sx).to_degrees().rem_euclid(360.0));
    }
    // "sunset over the sea" is a dusk scene even though "sunset" is also a word for light.
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_colours_light_weather_and_subjects() {
        let r = read("A misty PURPLE mountain lake at dusk, with snow");
        assert_eq!(r.time, Some(Time::Dusk));
        assert!(r.fog && r.snow && !r.rain);
        assert_eq!(r.subjects, vec![Subject::Mountains, Subject::Lake]);
        assert!((r.hue.unwrap() - 275.0).abs() < 0.5);
        let r = read("red and yellow flowers");
        let h = r.hue.unwrap();
        assert!(h > 20.0 && h < 35.0, "{h}");
        assert_eq!(read("a quiet room").subjects, vec![]);
        assert_eq!(read("moonlit city skyline").time, Some(Time::Night));
    }
}

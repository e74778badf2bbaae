//! Where plots are drawn: an SVG or a PNG file, chosen by the file's extension. Text is set in
//! the DejaVu Sans embedded in the binary, so a plot looks the same on a machine without fonts.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::{BitMapBackend, DrawingArea, IntoDrawingArea, SVGBackend};

/// What a plot is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Svg,
    Png,
}

/// The kind `path` asks for by its extension.
pub fn kind_of(path: &Path) -> Result<Kind, String> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Ok(Kind::Svg),
        Some("png") => Ok(Kind::Png),
        _ => Err(format!(
            "{} must end in .svg or .png (the plot's format is chosen by its extension)",
            path.display()
        )),
    }
}

/// The same path with `suffix` added to its stem, keeping the extension ("fire.png" →
/// "fire-curve.png").
pub fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plot");
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("svg");
    path.with_file_name(format!("{stem}{suffix}.{ext}"))
}

fn fonts() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The embedded font is a valid TrueType file; a failure here would only drop text.
        let _ = plotters::style::register_font(
            "sans-serif",
            plotters::style::FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Draws with `draw` on a `size` canvas and writes it to `path` as its extension says. `draw`
/// is called with the backend that kind needs; [`on_canvas!`] writes the call once for both.
pub fn write<S, P>(path: &Path, size: (u32, u32), svg: S, png: P) -> Result<(), String>
where
    S: FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
    P: FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String>,
{
    let kind = kind_of(path)?;
    fonts();
    match kind {
        Kind::Svg => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            svg(&root)?;
            root.present().map_err(|e| e.to_string())
        }
        Kind::Png => {
            let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
                png(&root)?;
                root.present().map_err(|e| e.to_string())?;
            }
            encode_png(path, size, &rgb)
        }
    }
}

fn encode_png(path: &Path, (w, h): (u32, u32), rgb: &[u8]) -> Result<(), String> {
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// `canvas::write` with one drawing body for both backends: `on_canvas!(path, size, |root|
/// body)` where `body` is generic code over the drawing area `root`.
#[macro_export]
macro_rules! on_canvas {
    ($path:expr, $size:expr, |$root:ident| $body:expr) => {
        $crate::canvas::write($path, $size, |$root| $body, |$root| $body)
    };
}

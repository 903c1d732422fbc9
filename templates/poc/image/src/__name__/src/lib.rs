//! The pure part of the workload: what one image becomes. Testable natively (`cargo test`).
//! Replace `transform` with your own idea; `main.rs` handles files, claims, argv and watch mode.

use image::{DynamicImage, ImageFormat};
use std::io::Cursor;

/// The file names this module takes (any case); the format itself is read from the content.
pub const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "gif", "bmp"];

/// The change made to every image: its colours inverted (alpha kept).
pub fn transform(image: &mut DynamicImage) {
    image.invert();
}

/// One image file in, the changed image out, encoded in the input's own format.
pub fn process(data: &[u8]) -> Result<Vec<u8>, String> {
    let format = image::guess_format(data).map_err(|e| format!("not an image: {}", e))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::Bmp) {
        return Err(format!("{:?} is not a format this module writes", format));
    }
    let mut image = image::load_from_memory_with_format(data, format).map_err(|e| e.to_string())?;
    transform(&mut image);
    let mut encoded = Cursor::new(Vec::new());
    image.write_to(&mut encoded, format).map_err(|e| e.to_string())?;
    Ok(encoded.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_channel_is_inverted_and_alpha_kept() {
        let mut image = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(2, 1, image::Rgba([10, 200, 0, 128])));
        transform(&mut image);
        assert_eq!(image.to_rgba8().get_pixel(1, 0).0, [245, 55, 255, 128]);
    }

    #[test]
    fn output_keeps_the_input_format_and_size() {
        let input = include_bytes!("../../../examples/input/gradient.png");
        let output = process(input).unwrap();
        assert_eq!(image::guess_format(&output).unwrap(), ImageFormat::Png);
        let (before, after) = (image::load_from_memory(input).unwrap(), image::load_from_memory(&output).unwrap());
        assert_eq!((before.width(), before.height()), (after.width(), after.height()));
    }

    /// JPEG is lossy and its decoder takes other paths natively than in wasm, so its output is
    /// checked by format and size here rather than byte for byte in examples/expected.
    #[test]
    fn a_jpeg_stays_a_jpeg() {
        let mut jpeg = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(image::RgbImage::from_pixel(9, 7, image::Rgb([200, 100, 50])))
            .write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let output = process(jpeg.get_ref()).unwrap();
        assert_eq!(image::guess_format(&output).unwrap(), ImageFormat::Jpeg);
        let pixel = image::load_from_memory(&output).unwrap().to_rgb8().get_pixel(4, 3).0;
        assert!(pixel.iter().zip([55u8, 155, 205]).all(|(got, want)| (i16::from(*got) - i16::from(want)).abs() <= 8), "{:?}", pixel);
    }

    #[test]
    fn not_an_image_is_refused_by_name() {
        assert!(process(b"hello").unwrap_err().starts_with("not an image"));
    }

    /// The examples and what the module must write for them: tests/test_poc.py compares the
    /// module's output in wasmtime with the same files, so the result is stated once, here.
    #[test]
    fn examples_give_their_expected_results() {
        assert_eq!(process(include_bytes!("../../../examples/input/gradient.png")).unwrap(),
                   include_bytes!("../../../examples/expected/gradient.png"));
        assert_eq!(process(include_bytes!("../../../examples/input/tiles.bmp")).unwrap(),
                   include_bytes!("../../../examples/expected/tiles.bmp"));
    }
}

//! Decoding and encoding with the image crate's own codecs. The format is read from the
//! content, never trusted from the extension; each format can be left out of the build.

use std::io::Cursor;

use image::buffer::ConvertBuffer;
use image::io::Limits;
use image::{ColorType, ImageBuffer, ImageDecoder, ImageFormat, ImageResult, Luma, LumaA, Pixel, Rgb, Rgba};

/// The formats the contract names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Gif,
    Bmp,
    Tiff,
    WebP,
}

impl Format {
    pub const ALL: [Format; 6] = [Format::Png, Format::Jpeg, Format::Gif, Format::Bmp, Format::Tiff, Format::WebP];

    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpeg",
            Format::Gif => "gif",
            Format::Bmp => "bmp",
            Format::Tiff => "tiff",
            Format::WebP => "webp",
        }
    }

    /// Whether this module was built with the format's codec.
    pub fn built_in(self) -> bool {
        match self {
            Format::Png => cfg!(feature = "png"),
            Format::Jpeg => cfg!(feature = "jpeg"),
            Format::Gif => cfg!(feature = "gif"),
            Format::Bmp => cfg!(feature = "bmp"),
            Format::Tiff => cfg!(feature = "tiff"),
            Format::WebP => cfg!(feature = "webp"),
        }
    }

    /// The format an output of this input is written in: WebP has no offline encoder, so PNG.
    pub fn output(self) -> Format {
        match self {
            Format::WebP => Format::Png,
            other => other,
        }
    }
}

/// File name extensions (lower case) that mark a file as an input.
pub const INPUT_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp"];

/// Names the formats compiled into this module, for the banner.
pub fn built_formats() -> Vec<&'static str> {
    Format::ALL.iter().filter(|f| f.built_in()).map(|f| f.name()).collect()
}

/// Recognises the content, or says why it is not something we can decode.
pub fn sniff(bytes: &[u8]) -> Result<Format, String> {
    if bytes.is_empty() {
        return Err("empty file".to_string());
    }
    let format = match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => Format::Png,
        Ok(ImageFormat::Jpeg) => Format::Jpeg,
        Ok(ImageFormat::Gif) => Format::Gif,
        Ok(ImageFormat::Bmp) => Format::Bmp,
        Ok(ImageFormat::Tiff) => Format::Tiff,
        Ok(ImageFormat::WebP) => Format::WebP,
        Ok(other) => return Err(format!("unsupported format {:?}", other)),
        Err(_) => return Err("not an image (content matches no supported format)".to_string()),
    };
    if !format.built_in() {
        return Err(format!(
            "unsupported format {}: this module was built without it (built with: {})",
            format.name(),
            built_formats().join(", ")
        ));
    }
    Ok(format)
}

/// Decodes into 8-bit RGB or RGBA pixels, after checking the header's dimensions against
/// `max_pixels`, so an oversized image is refused before any pixel buffer is allocated.
///
/// Each format's decoder is made once and read straight into the buffer the kernel works on:
/// no second pass over the header, and no copy for 8-bit RGB and RGBA (most images).
pub fn decode(bytes: &[u8], format: Format, max_pixels: u64) -> Result<Pixels, String> {
    use image::codecs;

    let cursor = Cursor::new(bytes);
    match format {
        #[cfg(feature = "png")]
        Format::Png => read_pixels(codecs::png::PngDecoder::new(cursor), format, max_pixels),
        #[cfg(feature = "jpeg")]
        Format::Jpeg => read_pixels(codecs::jpeg::JpegDecoder::new(cursor), format, max_pixels),
        #[cfg(feature = "gif")]
        Format::Gif => read_pixels(codecs::gif::GifDecoder::new(cursor), format, max_pixels),
        #[cfg(feature = "bmp")]
        Format::Bmp => read_pixels(codecs::bmp::BmpDecoder::new(cursor), format, max_pixels),
        #[cfg(feature = "tiff")]
        Format::Tiff => read_pixels(codecs::tiff::TiffDecoder::new(cursor), format, max_pixels),
        #[cfg(feature = "webp")]
        Format::WebP => {
            // The image crate's WebP decoder decodes the whole frame when it is made.
            let (width, height) = webp_dimensions(bytes).ok_or_else(|| "truncated webp data".to_string())?;
            check_size(width, height, format, max_pixels)?;
            let pixels = read_pixels(codecs::webp::WebPDecoder::new(cursor), format, max_pixels)?;
            // It decodes every lossless WebP as RGBA; one whose header says it has no alpha is
            // RGB, as other decoders (and the contract's "RGBA with alpha") have it.
            if pixels.channels == 4 && !webp_declares_alpha(bytes) {
                Ok(Pixels { channels: 3, data: drop_alpha(&pixels.data), ..pixels })
            } else {
                Ok(pixels)
            }
        }
        #[allow(unreachable_patterns)]
        other => Err(format!("cannot read {}: this module was built without it", other.name())),
    }
}

/// Refuses an image over `max_pixels`, or with none; returns its number of pixels.
fn check_size(width: u32, height: u32, format: Format, max_pixels: u64) -> Result<u64, String> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(format!("too large: {}x{} is {} pixels, over --max-pixels {}", width, height, pixels, max_pixels));
    }
    if pixels == 0 {
        return Err(format!("{} image with no pixels ({}x{})", format.name(), width, height));
    }
    Ok(pixels)
}

fn read_pixels<'a, D: ImageDecoder<'a>>(decoder: ImageResult<D>, format: Format, max_pixels: u64) -> Result<Pixels, String> {
    let fail = |e| describe(format, e);
    let mut decoder = decoder.map_err(fail)?;
    let (width, height) = decoder.dimensions();
    let pixels = check_size(width, height, format, max_pixels)?;
    // The decoder must not produce more than the header promised (16-bit RGBA is 8 bytes a pixel).
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(pixels.saturating_mul(8).saturating_add(1 << 20));
    let total = decoder.total_bytes();
    limits.reserve(total).map_err(fail)?;
    decoder.set_limits(limits).map_err(fail)?;
    let color = decoder.color_type();
    let size = usize::try_from(total).map_err(|_| format!("too large for this machine: {}x{}", width, height))?;
    // Grey and palette become RGB (RGBA with alpha), 16-bit becomes 8-bit: by the image crate's
    // own conversions, the ones `DynamicImage::into_rgb8` makes.
    let (channels, data) = match color {
        ColorType::Rgb8 | ColorType::Rgba8 | ColorType::L8 | ColorType::La8 => {
            let mut data = vec![0u8; size];
            decoder.read_image(&mut data).map_err(fail)?;
            match color {
                ColorType::L8 => (3, converted::<Luma<u8>, Rgb<u8>>(width, height, data)),
                ColorType::La8 => (4, converted::<LumaA<u8>, Rgba<u8>>(width, height, data)),
                _ => (usize::from(color.channel_count()), data),
            }
        }
        ColorType::L16 | ColorType::La16 | ColorType::Rgb16 | ColorType::Rgba16 => {
            let mut data = vec![0u16; size / 2];
            decoder.read_image(bytemuck::cast_slice_mut(&mut data)).map_err(fail)?;
            match color {
                ColorType::L16 => (3, converted::<Luma<u16>, Rgb<u8>>(width, height, data)),
                ColorType::La16 => (4, converted::<LumaA<u16>, Rgba<u8>>(width, height, data)),
                ColorType::Rgb16 => (3, converted::<Rgb<u16>, Rgb<u8>>(width, height, data)),
                _ => (4, converted::<Rgba<u16>, Rgba<u8>>(width, height, data)),
            }
        }
        other => return Err(format!("unsupported {} colour type {:?}", format.name(), other)),
    };
    Ok(Pixels { width, height, channels, data })
}

/// `samples` of pixel type `From` as the 8-bit bytes of pixel type `To`.
fn converted<From, To>(width: u32, height: u32, samples: Vec<From::Subpixel>) -> Vec<u8>
where
    From: Pixel + 'static,
    To: Pixel<Subpixel = u8> + 'static,
    ImageBuffer<From, Vec<From::Subpixel>>: ConvertBuffer<ImageBuffer<To, Vec<u8>>>,
{
    let image = ImageBuffer::<From, _>::from_raw(width, height, samples).expect("the decoder filled the buffer it was given");
    image.convert().into_raw()
}

/// A WebP file's canvas size from its header, as its decoder will find it: VP8X's canvas, the
/// 14-bit fields of VP8L, or those of a lossy key frame (RFC 6386, 9.1).
#[cfg(feature = "webp")]
fn webp_dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    let at = |range: std::ops::Range<usize>| bytes.get(range);
    let le24 = |b: &[u8]| u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16;
    match at(12..16)? {
        b"VP8X" => {
            let b = at(24..30)?;
            Some((1 + le24(&b[0..3]), 1 + le24(&b[3..6])))
        }
        b"VP8L" => {
            let b = at(21..25)?;
            let bits = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            Some((1 + (bits & 0x3fff), 1 + ((bits >> 14) & 0x3fff)))
        }
        b"VP8 " => {
            let b = at(26..30)?;
            Some((u32::from(u16::from_le_bytes([b[0], b[1]]) & 0x3fff), u32::from(u16::from_le_bytes([b[2], b[3]]) & 0x3fff)))
        }
        _ => None,
    }
}

/// Whether a WebP file's header says it carries alpha: the VP8L `alpha_is_used` bit, or the
/// VP8X alpha flag. (A simple lossy `VP8 ` file has none.)
#[cfg(feature = "webp")]
fn webp_declares_alpha(bytes: &[u8]) -> bool {
    match bytes.get(12..16) {
        Some(b"VP8L") => bytes.get(21..25).map_or(true, |b| (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 28) & 1 == 1),
        Some(b"VP8X") => bytes.get(20).map_or(true, |flags| flags & 0x10 != 0),
        _ => false,
    }
}

fn describe(format: Format, error: image::ImageError) -> String {
    match error {
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated {} data", format.name())
        }
        image::ImageError::Limits(e) => format!("over the memory limit while decoding: {}", e),
        other => format!("corrupt {} data: {}", format.name(), other),
    }
}

/// Interleaved 8-bit pixels ready for the kernel: RGB, or RGBA when the input has alpha.
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    #[cfg(any(feature = "png", feature = "bmp", feature = "tiff"))]
    fn color(&self) -> ColorType {
        if self.channels == 4 {
            ColorType::Rgba8
        } else {
            ColorType::Rgb8
        }
    }
}

/// Encodes in `format` (the input's output format). PNG favours speed and stays lossless:
/// deflate level 1 with the Up filter measured fastest here, at 1% more bytes than Sub.
pub fn encode(pixels: Pixels, format: Format) -> Result<Vec<u8>, String> {
    // Room for the whole output, so it is never copied to grow: lossless formats are at most a
    // little larger than the pixels (stored deflate blocks, row filter bytes), JPEG and GIF smaller.
    let lossless = matches!(format.output(), Format::Png | Format::Bmp | Format::Tiff);
    let raw = pixels.data.len();
    let mut out = Cursor::new(Vec::with_capacity(if lossless { raw + raw / 32 + 4096 } else { raw / 2 + 4096 }));
    let (w, h) = (pixels.width, pixels.height);
    #[allow(unused_imports)]
    use image::ImageEncoder;
    #[allow(unused_variables)]
    let failed = |e: image::ImageError| format!("cannot encode {}: {}", format.output().name(), e);
    match format.output() {
        #[cfg(feature = "png")]
        Format::Png => {
            use image::codecs::png::{CompressionType, FilterType, PngEncoder};
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Up)
                .write_image(&pixels.data, w, h, pixels.color())
                .map_err(failed)
        }
        #[cfg(feature = "jpeg")]
        Format::Jpeg => {
            let rgb = if pixels.channels == 4 { drop_alpha(&pixels.data) } else { pixels.data };
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).write_image(&rgb, w, h, ColorType::Rgb8).map_err(failed)
        }
        #[cfg(feature = "gif")]
        Format::Gif => {
            let rgba = if pixels.channels == 3 { add_alpha(&pixels.data) } else { pixels.data };
            encode_gif(&mut out, &rgba, w, h)
        }
        #[cfg(feature = "bmp")]
        Format::Bmp => image::codecs::bmp::BmpEncoder::new(&mut out).write_image(&pixels.data, w, h, pixels.color()).map_err(failed),
        #[cfg(feature = "tiff")]
        Format::Tiff => image::codecs::tiff::TiffEncoder::new(&mut out).write_image(&pixels.data, w, h, pixels.color()).map_err(failed),
        #[allow(unreachable_patterns)]
        other => Err(format!("cannot write {}: this module was built without it", other.name())),
    }?;
    Ok(out.into_inner())
}

/// GIF has one transparent palette index and no colour behind it. The gif crate's encoder keeps
/// only the last transparent colour it sees as transparent, so once the kernel has changed the
/// colours of transparent pixels most of them would turn opaque: quantise the visible pixels
/// (exactly when they have few colours, else NeuQuant at speed 10) and give the rest one index.
#[cfg(feature = "gif")]
fn encode_gif(out: &mut Cursor<Vec<u8>>, rgba: &[u8], width: u32, height: u32) -> Result<(), String> {
    use std::collections::BTreeMap;

    let too_large = || format!("a GIF is at most 65535x65535, not {}x{}", width, height);
    let (w, h) = (u16::try_from(width).map_err(|_| too_large())?, u16::try_from(height).map_err(|_| too_large())?);
    let has_transparency = rgba.chunks_exact(4).any(|p| p[3] == 0);
    let colours = if has_transparency { 255 } else { 256 };
    let mut exact: BTreeMap<[u8; 3], u8> = BTreeMap::new();
    for p in rgba.chunks_exact(4).filter(|p| p[3] != 0) {
        if exact.len() > colours {
            break;
        }
        let next = exact.len() as u8;
        exact.entry([p[0], p[1], p[2]]).or_insert(next);
    }
    let (mut palette, indices): (Vec<u8>, Vec<u8>) = if exact.len() <= colours {
        let mut palette = vec![0u8; exact.len() * 3];
        for (colour, index) in &exact {
            palette[*index as usize * 3..*index as usize * 3 + 3].copy_from_slice(colour);
        }
        let indices = rgba.chunks_exact(4).map(|p| if p[3] == 0 { 255 } else { exact[&[p[0], p[1], p[2]]] }).collect();
        (palette, indices)
    } else {
        let visible: Vec<u8> = rgba.chunks_exact(4).filter(|p| p[3] != 0).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let quantizer = color_quant::NeuQuant::new(10, colours, &visible);
        let indices = rgba
            .chunks_exact(4)
            .map(|p| if p[3] == 0 { 255 } else { quantizer.index_of(&[p[0], p[1], p[2], 255]) as u8 })
            .collect();
        (quantizer.color_map_rgb(), indices)
    };
    let transparent = if has_transparency {
        palette.resize(256 * 3, 0); // index 255 is the transparent one
        Some(255)
    } else {
        None
    };
    let frame = gif::Frame { width: w, height: h, buffer: indices.into(), palette: Some(palette), transparent, ..gif::Frame::default() };
    let mut encoder = gif::Encoder::new(out, w, h, &[]).map_err(|e| format!("cannot encode gif: {}", e))?;
    encoder.write_frame(&frame).map_err(|e| format!("cannot encode gif: {}", e))
}

#[allow(dead_code)]
fn drop_alpha(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
}

#[allow(dead_code)]
fn add_alpha(rgb: &[u8]) -> Vec<u8> {
    rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
}

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

/// What bounds one image's decoding: its pixels, and the bytes it may take in memory (the
/// file, the decoded image at its native depth, and the output).
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    pub max_pixels: u64,
    pub max_bytes: u64,
}

/// Decodes into 8-bit RGB or RGBA pixels, after checking the header's dimensions against the
/// limits, so an oversized image is refused before any pixel buffer is allocated.
///
/// Each format's decoder is made once and read straight into the buffer the kernel works on:
/// no second pass over the header, and no copy for 8-bit RGB and RGBA (most images).
pub fn decode(bytes: &[u8], format: Format, limits: DecodeLimits) -> Result<Pixels, String> {
    use image::codecs;

    let cursor = Cursor::new(bytes);
    let file = bytes.len() as u64;
    match format {
        #[cfg(feature = "png")]
        Format::Png => read_pixels(codecs::png::PngDecoder::new(cursor), format, limits, file),
        #[cfg(feature = "jpeg")]
        Format::Jpeg => read_pixels(codecs::jpeg::JpegDecoder::new(cursor), format, limits, file),
        #[cfg(feature = "gif")]
        Format::Gif => read_pixels(codecs::gif::GifDecoder::new(cursor), format, limits, file),
        #[cfg(feature = "bmp")]
        Format::Bmp => read_pixels(codecs::bmp::BmpDecoder::new(cursor), format, limits, file),
        #[cfg(feature = "tiff")]
        Format::Tiff => read_pixels(codecs::tiff::TiffDecoder::new(cursor), format, limits, file),
        #[cfg(feature = "webp")]
        Format::WebP => {
            // The image crate's WebP decoder decodes the whole frame (as RGBA) when it is made.
            let (width, height) = webp_dimensions(bytes).ok_or_else(|| "truncated webp data".to_string())?;
            let pixels = check_size(width, height, format, limits.max_pixels)?;
            check_budget(width, height, pixels * 4, 4, Format::Png, limits.max_bytes, file)?;
            // A lossy frame once more with 0xff bytes after its data: image 0.24's VP8 reader reads
            // zeros past the end of its data (RFC 6386's suggestion) and says nothing, so a frame
            // whose last partition was cut decodes; a whole one never reads past its end.
            let probe = match webp_with_vp8_tail(bytes) {
                Some(padded) => {
                    let probe = read_pixels(codecs::webp::WebPDecoder::new(Cursor::new(&padded[..])), format, limits, file)?;
                    Some(fingerprint(&probe.data))
                }
                None => None,
            };
            let pixels = read_pixels(codecs::webp::WebPDecoder::new(cursor), format, limits, file)?;
            if probe.map_or(false, |probe| probe != fingerprint(&pixels.data)) {
                return Err("truncated webp data: its VP8 frame's data ends before the image does".to_string());
            }
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

/// Refuses an image whose decoding would take more than `max_bytes`: the file, the decoded
/// image at its native depth (`native` bytes), the 8-bit pixels when they are a conversion
/// (`channels` each), and the room reserved for the output.
fn check_budget(width: u32, height: u32, native: u64, native_channels: u8, format: Format, max_bytes: u64, file: u64) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    let channels = if native_channels == 2 || native_channels == 4 { 4 } else { 3 };
    let eight_bit = pixels * channels;
    let converted = if native == eight_bit { 0 } else { eight_bit };
    let needed = file + native + converted + output_capacity(format, eight_bit);
    if needed > max_bytes {
        return Err(format!(
            "too large for --max-bytes {}: {}x{} needs {} bytes to decode and write (the file, the image and the output)",
            max_bytes, width, height, needed
        ));
    }
    Ok(())
}

/// Room for an output of `raw` 8-bit pixel bytes, so it is never copied to grow: lossless formats
/// are at most a little larger than the pixels (stored deflate blocks, row filter bytes), JPEG
/// and GIF smaller.
fn output_capacity(format: Format, raw: u64) -> u64 {
    let lossless = matches!(format.output(), Format::Png | Format::Bmp | Format::Tiff);
    if lossless {
        raw + raw / 32 + 4096
    } else {
        raw / 2 + 4096
    }
}

fn read_pixels<'a, D: ImageDecoder<'a>>(decoder: ImageResult<D>, format: Format, budget: DecodeLimits, file: u64) -> Result<Pixels, String> {
    let fail = |e| describe(format, e);
    let mut decoder = decoder.map_err(fail)?;
    let (width, height) = decoder.dimensions();
    let pixels = check_size(width, height, format, budget.max_pixels)?;
    check_budget(width, height, decoder.total_bytes(), decoder.color_type().channel_count(), format, budget.max_bytes, file)?;
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

/// The file with 16 bytes of 0xff appended to its lossy (`VP8 `) frame's data, the chunk's and
/// the RIFF's sizes grown to match; None without a lossy frame.
#[cfg(feature = "webp")]
fn webp_with_vp8_tail(bytes: &[u8]) -> Option<Vec<u8>> {
    const TAIL: usize = 16; // even: a chunk's padding byte stays where it is
    let le32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let size = le32(at + 4)?;
        let end = at.checked_add(8 + size)?;
        if &bytes[at..at + 4] == b"VP8 " {
            let mut padded = Vec::with_capacity(bytes.len() + TAIL);
            padded.extend_from_slice(bytes.get(..end)?);
            padded.extend_from_slice(&[0xff; TAIL]);
            padded.extend_from_slice(&bytes[end..]);
            padded[at + 4..at + 8].copy_from_slice(&((size + TAIL) as u32).to_le_bytes());
            let riff = le32(4)? + TAIL;
            padded[4..8].copy_from_slice(&(riff as u32).to_le_bytes());
            return Some(padded);
        }
        at = end + (size & 1);
    }
    None
}

#[cfg(feature = "webp")]
fn fingerprint(data: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(data);
    hasher.finish()
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

/// What a JPEG's scans must add up to: in a sequential (baseline) frame, each scan's entropy-coded
/// data holds every MCU it promises (walked through its Huffman codes, no pixel is computed), and
/// every component is in a scan; in a progressive frame, the scans bring every coefficient of
/// every component to full precision. The decoder would fill what is missing with zeros.
#[derive(Default)]
struct JpegScans {
    /// (class, id) -> the table as (min code, max code, first symbol index) per length, and symbols.
    tables: Vec<((u8, u8), HuffmanTable)>,
    restart_interval: usize,
    /// The frame: sequential with Huffman coding (walked), size, components (id, h, v).
    sequential: bool,
    progressive: bool,
    size: (usize, usize),
    components: Vec<(u8, usize, usize)>,
    /// Per component, the lowest successive-approximation bit each coefficient was brought to (255: none).
    precision: Vec<[u8; 64]>,
}

struct HuffmanTable {
    max_code: [i32; 17],
    offset: [i32; 17],
    symbols: Vec<u8>,
    /// The codes of up to FAST_BITS bits, by their first FAST_BITS bits: (length, symbol); length 0: longer.
    fast: Vec<(u8, u8)>,
}

const FAST_BITS: u32 = 9;

impl JpegScans {
    fn define_tables(&mut self, mut segment: &[u8]) -> Result<(), String> {
        while segment.len() >= 17 {
            let (class, id) = (segment[0] >> 4, segment[0] & 15);
            let counts = &segment[1..17];
            let total: usize = counts.iter().map(|c| usize::from(*c)).sum();
            let symbols = segment.get(17..17 + total).ok_or_else(|| "corrupt jpeg data: a Huffman table is cut short".to_string())?;
            let (mut max_code, mut offset, mut code, mut index) = ([-1i32; 17], [0i32; 17], 0i32, 0i32);
            for length in 1..=16 {
                let count = i32::from(counts[length - 1]);
                offset[length] = index - code;
                code += count;
                index += count;
                max_code[length] = if count > 0 { code - 1 } else { -1 };
                code <<= 1;
            }
            let mut fast = vec![(0u8, 0u8); 1 << FAST_BITS];
            let (mut code, mut index) = (0usize, 0usize);
            for length in 1..=FAST_BITS as usize {
                for _ in 0..counts[length - 1] {
                    let first = code << (FAST_BITS as usize - length);
                    for entry in fast.iter_mut().skip(first).take(1 << (FAST_BITS as usize - length)) {
                        *entry = (length as u8, symbols[index]);
                    }
                    code += 1;
                    index += 1;
                }
                code <<= 1;
            }
            self.tables.retain(|(key, _)| *key != (class, id));
            self.tables.push(((class, id), HuffmanTable { max_code, offset, symbols: symbols.to_vec(), fast }));
            segment = &segment[17 + total..];
        }
        Ok(())
    }

    fn frame(&mut self, marker: u8, segment: &[u8]) {
        self.sequential = matches!(marker, 0xc0 | 0xc1);
        self.progressive = matches!(marker, 0xc2 | 0xc6 | 0xca | 0xce);
        if segment.len() < 6 {
            return;
        }
        self.size = (usize::from(u16::from_be_bytes([segment[3], segment[4]])), usize::from(u16::from_be_bytes([segment[1], segment[2]])));
        self.components = segment[6..].chunks_exact(3).take(usize::from(segment[5])).map(|c| (c[0], usize::from(c[1] >> 4), usize::from(c[1] & 15))).collect();
        self.precision = vec![[255u8; 64]; self.components.len()];
    }

    /// One scan: its header, and (sequential frames) the entropy-coded `data` after it.
    fn scan(&mut self, header: &[u8], data: &[u8]) -> Result<(), String> {
        let count = usize::from(*header.first().unwrap_or(&0));
        let tail = header.get(1 + 2 * count..1 + 2 * count + 3).ok_or_else(|| "corrupt jpeg data: a scan header is cut short".to_string())?;
        let (start, end, low) = (usize::from(tail[0]).min(63), usize::from(tail[1]).min(63), tail[2] & 15);
        let mut members = Vec::new();
        for selector in header[1..1 + 2 * count].chunks_exact(2) {
            let index = self.components.iter().position(|c| c.0 == selector[0]).ok_or_else(|| "corrupt jpeg data: a scan names a component the frame lacks".to_string())?;
            let (first, last) = if self.progressive { (start, end.max(start)) } else { (0, 63) };
            for bit in &mut self.precision[index][first..=last] {
                *bit = (*bit).min(if self.progressive { low } else { 0 });
            }
            members.push((index, selector[1] >> 4, selector[1] & 15));
        }
        if self.sequential && self.size.0 > 0 && self.size.1 > 0 {
            self.walk(&members, data)?;
        }
        Ok(())
    }

    /// Decodes the Huffman codes of every block the scan promises; fails when the data (up to the
    /// next marker other than a restart) ends first.
    fn walk(&self, members: &[(usize, u8, u8)], data: &[u8]) -> Result<(), String> {
        let table = |class: u8, id: u8| self.tables.iter().find(|(key, _)| *key == (class, id)).map(|(_, t)| t);
        let h_max = self.components.iter().map(|c| c.1).max().unwrap_or(1).max(1);
        let v_max = self.components.iter().map(|c| c.2).max().unwrap_or(1).max(1);
        let (width, height) = self.size;
        // (units in the scan, blocks of each member in one unit)
        let (units, blocks): (usize, Vec<usize>) = if members.len() == 1 {
            let (_, h, v) = self.components[members[0].0];
            let columns = (width * h + h_max - 1) / h_max;
            let rows = (height * v + v_max - 1) / v_max;
            (((columns + 7) / 8) * ((rows + 7) / 8), vec![1])
        } else {
            let units = ((width + 8 * h_max - 1) / (8 * h_max)) * ((height + 8 * v_max - 1) / (8 * v_max));
            (units, members.iter().map(|m| self.components[m.0].1 * self.components[m.0].2).collect())
        };
        let mut bits = ScanBits::new(data);
        let cut = |done: usize| format!("truncated jpeg data: a scan ends after {} of its {} MCUs", done, units);
        for unit in 0..units {
            if self.restart_interval > 0 && unit > 0 && unit % self.restart_interval == 0 && !bits.restart() {
                return Err(cut(unit));
            }
            for (member, count) in members.iter().zip(&blocks) {
                let dc = table(0, member.1).ok_or_else(|| "corrupt jpeg data: a scan uses an undefined Huffman table".to_string())?;
                let ac = table(1, member.2).ok_or_else(|| "corrupt jpeg data: a scan uses an undefined Huffman table".to_string())?;
                for _ in 0..*count {
                    let size = bits.decode(dc).ok_or_else(|| cut(unit))?;
                    bits.skip(size & 15).ok_or_else(|| cut(unit))?;
                    let mut k = 1;
                    while k < 64 {
                        let symbol = bits.decode(ac).ok_or_else(|| cut(unit))?;
                        let (run, size) = (usize::from(symbol >> 4), symbol & 15);
                        if size == 0 {
                            if run != 15 {
                                break; // end of block
                            }
                            k += 16;
                        } else {
                            k += run + 1;
                            bits.skip(size).ok_or_else(|| cut(unit))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn complete(&self) -> Result<(), String> {
        if self.precision.iter().any(|bits| bits.iter().any(|bit| *bit != 0)) {
            return Err("truncated jpeg data: the file ends before its scans cover the whole image".to_string());
        }
        Ok(())
    }
}

/// The bits of one scan's entropy-coded data: stuffed zero bytes removed, ending at a marker. Up
/// to 64 bits are buffered, so a code is looked up from 16 peeked bits, not read bit by bit.
struct ScanBits<'a> {
    data: &'a [u8],
    at: usize,
    buffer: u64,
    count: u32,
    ended: bool, // a marker (or the file's end) was reached: no bits after those buffered
}

impl<'a> ScanBits<'a> {
    fn new(data: &'a [u8]) -> Self {
        ScanBits { data, at: 0, buffer: 0, count: 0, ended: false }
    }

    fn fill(&mut self) {
        while self.count <= 56 && !self.ended {
            match (self.data.get(self.at), self.data.get(self.at + 1)) {
                (Some(0xff), Some(0)) => {
                    self.buffer = self.buffer << 8 | 0xff;
                    self.at += 2;
                }
                (Some(0xff), _) | (None, _) => self.ended = true, // a marker: this scan's data ends here
                (Some(byte), _) => {
                    self.buffer = self.buffer << 8 | u64::from(*byte);
                    self.at += 1;
                }
            }
            if !self.ended {
                self.count += 8;
            }
        }
    }

    /// The next 16 bits (zeros past the end), and how many of them are real.
    fn peek(&mut self) -> (u32, u32) {
        self.fill();
        let bits = if self.count >= 16 { (self.buffer >> (self.count - 16)) as u32 } else { (self.buffer << (16 - self.count)) as u32 };
        (bits & 0xffff, self.count.min(16))
    }

    fn skip(&mut self, count: u8) -> Option<()> {
        self.fill();
        let count = u32::from(count);
        if count > self.count {
            return None;
        }
        self.consume(count);
        Some(())
    }

    fn decode(&mut self, table: &HuffmanTable) -> Option<u8> {
        let (bits, real) = self.peek();
        let (length, symbol) = table.fast[(bits >> (16 - FAST_BITS)) as usize];
        if length > 0 {
            if u32::from(length) > real {
                return None;
            }
            self.consume(u32::from(length));
            return Some(symbol);
        }
        for length in FAST_BITS + 1..=16 {
            let code = (bits >> (16 - length)) as i32;
            if code <= table.max_code[length as usize] {
                if length > real {
                    return None; // the code runs past the data
                }
                self.consume(length);
                return table.symbols.get((code + table.offset[length as usize]) as usize).copied();
            }
        }
        None // no code of 16 bits or fewer: corrupt, and the decoder will say so
    }

    fn consume(&mut self, count: u32) {
        self.count -= count;
        self.buffer &= u64::MAX.checked_shr(64 - self.count).unwrap_or(0); // keeps the unread bits
    }

    /// Past a restart marker (RST0-7), which ends the bits of one interval.
    fn restart(&mut self) -> bool {
        // What is buffered is this interval's padding; the marker is where reading stopped.
        let at = self.at;
        self.buffer = 0;
        self.count = 0;
        self.ended = false;
        match (self.data.get(at), self.data.get(at + 1)) {
            (Some(0xff), Some(0xd0..=0xd7)) => {
                self.at = at + 2;
                true
            }
            _ => false,
        }
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
    let mut out = Cursor::new(Vec::with_capacity(output_capacity(format, pixels.data.len() as u64) as usize));
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

/// Checks a whole file before it is decoded: that it is complete (decoders of WebP, JPEG and GIF
/// fill missing data silently, and a file still being copied must never become an output), and
/// that its header does not promise far more pixels than its data can hold (refused before any
/// allocation). Returns the number of frames or pages (only the first is processed).
pub fn inspect(bytes: &[u8], format: Format) -> Result<u32, String> {
    let truncated = |what: &str| format!("truncated {} data: the file ends before its {}", format.name(), what);
    let promise = |w: u64, h: u64| {
        format!("corrupt {} data: its header promises {}x{} pixels, far more than its {} bytes can hold", format.name(), w, h, bytes.len())
    };
    let be32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let le32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let le16 = |at: usize| bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match format {
        Format::Png => {
            // Chunks: length, type, data, CRC; the image is whole once IEND is reached. Deflate
            // expands at most 1032 times, so the rows cannot outgrow the IDAT bytes by more.
            let (mut at, mut idat, mut frames, mut rows) = (8usize, 0u64, 1u32, 0u64);
            loop {
                let (length, kind) = match (be32(at), bytes.get(at + 4..at + 8)) {
                    (Some(length), Some(kind)) => (length as usize, kind),
                    _ => return Err(truncated("IEND chunk")),
                };
                let end = at.checked_add(12 + length).filter(|end| *end <= bytes.len()).ok_or_else(|| truncated("IEND chunk"))?;
                match kind {
                    b"IHDR" if length >= 13 => {
                        let (w, h) = (u64::from(be32(at + 8).unwrap_or(0)), u64::from(be32(at + 12).unwrap_or(0)));
                        let bits = u64::from(bytes[at + 16]) * [1, 0, 3, 1, 2, 0, 4].get(usize::from(bytes[at + 17])).copied().unwrap_or(4);
                        rows = h.saturating_mul(1 + (w.saturating_mul(bits) + 7) / 8);
                        if w == 0 || h == 0 {
                            return Ok(1); // the decoder says "no pixels"
                        }
                        if rows / 1032 > bytes.len() as u64 {
                            return Err(promise(w, h));
                        }
                    }
                    b"IDAT" => idat += length as u64,
                    b"acTL" if length >= 8 => frames = be32(at + 8).unwrap_or(1).max(1),
                    b"IEND" => break,
                    _ => {}
                }
                at = end;
            }
            if rows / 1032 > idat + 64 {
                return Err(format!("corrupt png data: {} bytes of image data cannot hold its {} bytes of rows", idat, rows));
            }
            Ok(frames)
        }
        Format::Jpeg => {
            // Segments up to each scan, its entropy-coded data up to the next marker, until EOI.
            // Every 8x8 block takes at least one bit, so at most 512 pixels a byte. The scans
            // themselves are checked by `JpegScans`: an end-of-image marker after a cut scan
            // would otherwise be decoded with the rest filled in.
            let mut at = 2;
            let mut scans = JpegScans::default();
            loop {
                let marker = match (bytes.get(at), bytes.get(at + 1)) {
                    (Some(0xff), Some(marker)) => *marker,
                    (Some(_), Some(_)) => return Err(format!("corrupt jpeg data: no marker at byte {}", at)),
                    _ => return Err(truncated("end-of-image marker")),
                };
                at += 2;
                match marker {
                    0xd9 => return scans.complete().map(|_| 1),
                    0xff => at -= 1, // fill byte
                    0x01 | 0xd0..=0xd7 => {}
                    _ => {
                        let length = bytes.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))).ok_or_else(|| truncated("end-of-image marker"))?;
                        if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) && length >= 7 {
                            let b = bytes.get(at + 3..at + 7).ok_or_else(|| truncated("end-of-image marker"))?;
                            let (h, w) = (u64::from(u16::from_be_bytes([b[0], b[1]])), u64::from(u16::from_be_bytes([b[2], b[3]])));
                            if w * h / 512 > bytes.len() as u64 {
                                return Err(promise(w, h));
                            }
                        }
                        let segment = bytes.get(at + 2..at + length).ok_or_else(|| truncated("end-of-image marker"))?;
                        match marker {
                            0xc4 => scans.define_tables(segment)?,
                            0xdd if segment.len() >= 2 => scans.restart_interval = usize::from(u16::from_be_bytes([segment[0], segment[1]])),
                            0xc0..=0xc3 | 0xc5..=0xc7 | 0xc9..=0xcb | 0xcd..=0xcf => scans.frame(marker, segment),
                            0xda => scans.scan(segment, bytes.get(at + length..).unwrap_or(&[]))?,
                            _ => {}
                        }
                        at += length;
                        if marker == 0xda {
                            // Entropy-coded data: 0xff is followed by 0 (a stuffed byte) or a restart marker inside it.
                            loop {
                                match (bytes.get(at), bytes.get(at + 1)) {
                                    (Some(0xff), Some(next)) if *next == 0 || (0xd0..=0xd7).contains(next) => at += 2,
                                    (Some(0xff), Some(_)) => break,
                                    (Some(_), _) => at += 1,
                                    (None, _) => return Err(truncated("end-of-image marker")),
                                }
                            }
                        }
                    }
                }
            }
        }
        Format::Gif => {
            // Header, screen descriptor and colour table; then extensions and images, each made
            // of sub-blocks ending in an empty one, until the trailer. LZW codes take at least three
            // bits and give at most 4096 pixels, so a frame's data bounds its size.
            let table = |flags: u8| if flags & 0x80 != 0 { 3usize << ((flags & 7) + 1) } else { 0 };
            let mut at = 13 + table(*bytes.get(10).ok_or_else(|| truncated("trailer"))?);
            let mut frames = 0u32;
            loop {
                let introducer = *bytes.get(at).ok_or_else(|| truncated("trailer"))?;
                let area = match introducer {
                    0x3b => return Ok(frames.max(1)),
                    0x21 => {
                        at += 2;
                        None
                    }
                    0x2c => {
                        let (w, h) = (le16(at + 5), le16(at + 7));
                        let flags = *bytes.get(at + 9).ok_or_else(|| truncated("trailer"))?;
                        at += 10 + table(flags) + 1; // descriptor, local colour table, LZW code size
                        frames += 1;
                        Some((u64::from(w.unwrap_or(0)), u64::from(h.unwrap_or(0))))
                    }
                    other => return Err(format!("corrupt gif data: unknown block 0x{:02x} at byte {}", other, at)),
                };
                let start = at;
                loop {
                    let size = usize::from(*bytes.get(at).ok_or_else(|| truncated("trailer"))?);
                    at += 1 + size;
                    if size == 0 {
                        break;
                    }
                }
                if let Some((w, h)) = area {
                    if frames == 1 && w * h > (at - start) as u64 * 8 / 3 * 4096 {
                        return Err(promise(w, h));
                    }
                }
            }
        }
        Format::Bmp => {
            // Uncompressed rows (BI_RGB, BI_BITFIELDS) must all be there.
            let (offset, width, height, bits, compression) = (le32(10), le32(18), le32(22), le16(28), le32(30));
            let info_header = le32(14).map_or(false, |size| size >= 40); // not OS/2's 12-byte one
            if let (true, Some(offset), Some(width), Some(height), Some(bits), Some(0 | 3)) = (info_header, offset, width, height, bits, compression) {
                let stride = (u64::from(width as i32 as u32).saturating_mul(u64::from(bits)) + 31) / 32 * 4;
                let needed = u64::from(offset) + stride.saturating_mul(u64::from((height as i32).unsigned_abs()));
                if (bytes.len() as u64) < needed {
                    return Err(truncated("last row of pixels"));
                }
            }
            Ok(1)
        }
        Format::Tiff => {
            // Pages: the chain of image file directories (classic TIFF; BigTIFF counts as one).
            let le = bytes.starts_with(b"II");
            let word = |at: usize| bytes.get(at..at + 4).map(|b| if le { u32::from_le_bytes([b[0], b[1], b[2], b[3]]) } else { u32::from_be_bytes([b[0], b[1], b[2], b[3]]) });
            let half = |at: usize| bytes.get(at..at + 2).map(|b| if le { u16::from_le_bytes([b[0], b[1]]) } else { u16::from_be_bytes([b[0], b[1]]) });
            if half(2) != Some(42) {
                return Ok(1);
            }
            let (mut next, mut pages) = (word(4).unwrap_or(0) as usize, 0u32);
            while next != 0 && pages < 10_000 {
                let count = usize::from(half(next).ok_or_else(|| truncated("image file directory"))?);
                pages += 1;
                next = word(next + 2 + 12 * count).ok_or_else(|| truncated("image file directory"))? as usize;
            }
            Ok(pages.max(1))
        }
        Format::WebP => {
            // RIFF says how long the file is; a copy still being written is shorter. Each chunk
            // in it must be whole too, and a lossy frame must hold at least its first partition
            // (the VP8 decoder reads zeros past the end of its data, RFC 6386 p. 135).
            let declared = le32(4).ok_or_else(|| truncated("RIFF header"))? as u64 + 8;
            if (bytes.len() as u64) < declared {
                return Err(format!("truncated webp data: {} of the {} bytes its RIFF header declares", bytes.len(), declared));
            }
            let (mut at, mut frames) = (12usize, 0u32);
            while (at as u64) + 8 <= declared {
                let (kind, size) = (&bytes[at..at + 4], le32(at + 4).unwrap_or(0) as usize);
                let end = at.checked_add(8 + size).filter(|end| *end as u64 <= declared).ok_or_else(|| {
                    format!("truncated webp data: its {} chunk declares {} bytes, more than the file holds", String::from_utf8_lossy(kind).trim(), size)
                })?;
                match kind {
                    b"VP8 " => {
                        let tag = bytes.get(at + 8..at + 11).ok_or_else(|| truncated("VP8 frame header"))?;
                        let first_partition = (u32::from(tag[0]) | u32::from(tag[1]) << 8 | u32::from(tag[2]) << 16) >> 5;
                        if size < 10 + first_partition as usize {
                            return Err(truncated("VP8 frame's first partition"));
                        }
                    }
                    b"ANMF" => frames += 1,
                    _ => {}
                }
                at = end + (size & 1); // chunks are padded to an even length
            }
            if frames > 1 {
                // The image crate decodes an animation's frames into one wrong picture: refused, not kept.
                return Err(format!("animated webp ({} frames) is not supported: give a still image (its first frame)", frames));
            }
            Ok(1)
        }
    }
}

//! The pure pixel kernel of fractalify: no files, no WASI, testable natively with `cargo test`.
//!
//! The arithmetic is the contract's, bit for bit: every operation in IEEE-754 binary32, rounded
//! in the order written, never fused (Rust does not contract `a * b + c` into an FMA).

/// The colour channel that receives the iteration count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Red,
    Green,
    Blue,
}

impl Channel {
    /// Parses `red`, `green` or `blue` (any case).
    pub fn parse(text: &str) -> Option<Channel> {
        match text.to_ascii_lowercase().as_str() {
            "red" => Some(Channel::Red),
            "green" => Some(Channel::Green),
            "blue" => Some(Channel::Blue),
            _ => None,
        }
    }

    /// Byte offset of this channel inside an RGB or RGBA pixel.
    pub fn offset(self) -> usize {
        match self {
            Channel::Red => 0,
            Channel::Green => 1,
            Channel::Blue => 2,
        }
    }
}

/// What the kernel needs to know besides the pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JuliaParams {
    /// Real part of the Julia constant (the nearest f32 to the decimal given).
    pub cr: f32,
    /// Imaginary part of the Julia constant.
    pub ci: f32,
    /// Iteration bound, 1..=255, so the count always fits a byte.
    pub max_iter: u8,
    pub channel: Channel,
}

impl Default for JuliaParams {
    fn default() -> Self {
        JuliaParams { cr: -0.4, ci: 0.6, max_iter: 255, channel: Channel::Green }
    }
}

/// Parses `RE,IM` into the nearest f32 pair (parsing straight to f32 avoids double rounding).
pub fn parse_constant(text: &str) -> Option<(f32, f32)> {
    let (re, im) = text.split_once(',')?;
    let re: f32 = re.trim().parse().ok()?;
    let im: f32 = im.trim().parse().ok()?;
    if re.is_finite() && im.is_finite() {
        Some((re, im))
    } else {
        None
    }
}

/// The iteration count for one starting point `z0 = zr + i*zi`.
#[inline(always)]
pub fn escape_count(mut zr: f32, mut zi: f32, cr: f32, ci: f32, max_iter: u8) -> u8 {
    let mut n: u8 = 0;
    while n < max_iter && (zr * zr + zi * zi) <= 4.0 {
        let t = (zr * zr - zi * zi) + cr;
        zi = (2.0 * zr) * zi + ci;
        zr = t;
        n += 1;
    }
    n
}

/// Maps pixel indices to the complex plane: the shorter side spans [-1.5, 1.5], centred.
#[derive(Clone, Copy, Debug)]
pub struct PlaneMapping {
    half_width: f32,
    half_height: f32,
    scale: f32,
}

impl PlaneMapping {
    pub fn new(width: u32, height: u32) -> PlaneMapping {
        let shorter = width.min(height).max(1);
        PlaneMapping {
            half_width: width as f32 * 0.5,
            half_height: height as f32 * 0.5,
            scale: 3.0 / shorter as f32,
        }
    }

    #[inline(always)]
    pub fn re(&self, x: u32) -> f32 {
        ((x as f32 + 0.5) - self.half_width) * self.scale
    }

    #[inline(always)]
    pub fn im(&self, y: u32) -> f32 {
        ((y as f32 + 0.5) - self.half_height) * self.scale
    }
}

/// Writes the iteration count into `params.channel` of every pixel of an interleaved 8-bit
/// RGB (`channels == 3`) or RGBA (`channels == 4`) buffer; all other bytes keep their value.
pub fn fractalify(pixels: &mut [u8], width: u32, height: u32, channels: usize, params: &JuliaParams) {
    assert!(channels == 3 || channels == 4, "the kernel takes RGB or RGBA pixels");
    let row_len = width as usize * channels;
    assert_eq!(pixels.len(), row_len * height as usize, "buffer does not match the dimensions");
    if row_len == 0 {
        return;
    }
    let mapping = PlaneMapping::new(width, height);
    // The real part depends on the column only: compute it once per image, not once per pixel.
    let columns: Vec<f32> = (0..width).map(|x| mapping.re(x)).collect();
    let offset = params.channel.offset();
    for (y, row) in pixels.chunks_exact_mut(row_len).enumerate() {
        let zi0 = mapping.im(y as u32);
        fractalify_row(row, &columns, zi0, channels, offset, params);
    }
}

/// Which kernel this build runs: WebAssembly SIMD (four pixels per instruction) when compiled
/// with `+simd128`, the plain one-pixel loop with the `plain-kernel` feature (the baseline the
/// benchmark compares against), else four scalar pixels in flight. All give identical bytes.
pub const KERNEL: &str = if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
    "simd128"
} else if cfg!(feature = "plain-kernel") {
    "plain"
} else {
    "scalar-4"
};

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn fractalify_row(row: &mut [u8], columns: &[f32], zi0: f32, channels: usize, offset: usize, p: &JuliaParams) {
    let full = columns.len() / 4 * 4;
    for x in (0..full).step_by(4) {
        let counts = simd::escape_counts4([columns[x], columns[x + 1], columns[x + 2], columns[x + 3]], zi0, p.cr, p.ci, p.max_iter);
        for (lane, count) in counts.iter().enumerate() {
            row[(x + lane) * channels + offset] = *count;
        }
    }
    for x in full..columns.len() {
        row[x * channels + offset] = escape_count(columns[x], zi0, p.cr, p.ci, p.max_iter);
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use core::arch::wasm32::*;

    /// The contract's loop on four lanes at once: a lane that has escaped keeps its z (selected,
    /// not updated) and stops counting, exactly where the scalar loop would stop.
    #[inline(always)]
    pub fn escape_counts4(zr0: [f32; 4], zi0: f32, cr: f32, ci: f32, max_iter: u8) -> [u8; 4] {
        let (cr, ci, two, four) = (f32x4_splat(cr), f32x4_splat(ci), f32x4_splat(2.0), f32x4_splat(4.0));
        let mut zr = f32x4(zr0[0], zr0[1], zr0[2], zr0[3]);
        let mut zi = f32x4_splat(zi0);
        let mut n = i32x4_splat(0);
        for _ in 0..max_iter {
            let zr2 = f32x4_mul(zr, zr);
            let zi2 = f32x4_mul(zi, zi);
            let active = f32x4_le(f32x4_add(zr2, zi2), four);
            if !v128_any_true(active) {
                break;
            }
            let t = f32x4_add(f32x4_sub(zr2, zi2), cr);
            let next_zi = f32x4_add(f32x4_mul(f32x4_mul(two, zr), zi), ci);
            zr = v128_bitselect(t, zr, active);
            zi = v128_bitselect(next_zi, zi, active);
            n = i32x4_sub(n, active); // an active lane's mask is -1
        }
        [
            i32x4_extract_lane::<0>(n) as u8,
            i32x4_extract_lane::<1>(n) as u8,
            i32x4_extract_lane::<2>(n) as u8,
            i32x4_extract_lane::<3>(n) as u8,
        ]
    }
}

#[cfg(all(feature = "plain-kernel", not(all(target_arch = "wasm32", target_feature = "simd128"))))]
fn fractalify_row(row: &mut [u8], columns: &[f32], zi0: f32, channels: usize, offset: usize, p: &JuliaParams) {
    for (x, zr0) in columns.iter().enumerate() {
        row[x * channels + offset] = escape_count(*zr0, zi0, p.cr, p.ci, p.max_iter);
    }
}

/// One row, four pixels in flight: the four recurrences are independent, so their latencies
/// overlap instead of adding up. Each lane stops counting when it escapes, so the result is
/// identical to `escape_count` pixel by pixel.
#[cfg(not(any(feature = "plain-kernel", all(target_arch = "wasm32", target_feature = "simd128"))))]
fn fractalify_row(row: &mut [u8], columns: &[f32], zi0: f32, channels: usize, offset: usize, p: &JuliaParams) {
    const LANES: usize = 4;
    let mut x = 0;
    while x + LANES <= columns.len() {
        let counts = escape_counts4(
            [columns[x], columns[x + 1], columns[x + 2], columns[x + 3]],
            zi0,
            p.cr,
            p.ci,
            p.max_iter,
        );
        for (lane, count) in counts.iter().enumerate() {
            row[(x + lane) * channels + offset] = *count;
        }
        x += LANES;
    }
    while x < columns.len() {
        row[x * channels + offset] = escape_count(columns[x], zi0, p.cr, p.ci, p.max_iter);
        x += 1;
    }
}

/// Four starting points on one row (same imaginary part), iterated together.
#[cfg(not(any(feature = "plain-kernel", all(target_arch = "wasm32", target_feature = "simd128"))))]
#[inline(always)]
fn escape_counts4(zr0: [f32; 4], zi0: f32, cr: f32, ci: f32, max_iter: u8) -> [u8; 4] {
    let mut zr = zr0;
    let mut zi = [zi0; 4];
    let mut n = [0u8; 4];
    let mut active = [true; 4];
    let mut remaining = 4;
    let mut step: u8 = 0;
    while remaining > 0 && step < max_iter {
        for lane in 0..4 {
            if active[lane] {
                let (r, i) = (zr[lane], zi[lane]);
                if r * r + i * i <= 4.0 {
                    let t = (r * r - i * i) + cr;
                    zi[lane] = (2.0 * r) * i + ci;
                    zr[lane] = t;
                    n[lane] += 1;
                } else {
                    active[lane] = false;
                    remaining -= 1;
                }
            }
        }
        step += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's loop, written as plainly as possible, to compare the fast path against.
    fn reference(width: u32, height: u32, x: u32, y: u32, p: &JuliaParams) -> u8 {
        let s = 3.0f32 / (width.min(height) as f32);
        let zr = ((x as f32 + 0.5) - width as f32 * 0.5) * s;
        let zi = ((y as f32 + 0.5) - height as f32 * 0.5) * s;
        escape_count(zr, zi, p.cr, p.ci, p.max_iter)
    }

    fn rgba_image(width: u32, height: u32) -> Vec<u8> {
        (0..width * height * 4).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn centre_of_single_pixel_is_origin() {
        let m = PlaneMapping::new(1, 1);
        assert_eq!((m.re(0), m.im(0)), (0.0, 0.0));
    }

    #[test]
    fn shorter_side_spans_minus_to_plus_one_and_a_half() {
        let m = PlaneMapping::new(400, 200);
        assert!((m.im(0) - (-1.5 + 0.0075)).abs() < 1e-6);
        assert!((m.im(199) - (1.5 - 0.0075)).abs() < 1e-6);
        assert!((m.re(0) - (-3.0 + 0.0075)).abs() < 1e-6);
    }

    #[test]
    fn pinned_counts_match_numpy_float32_reference() {
        // Values from the NumPy float32 reference in tests/reference.py.
        let p = JuliaParams::default();
        assert_eq!(reference(1, 1, 0, 0, &p), 26);
        assert_eq!(reference(7, 5, 0, 0, &p), 0);
        assert_eq!(reference(64, 48, 10, 30, &p), 17);
        assert_eq!(reference(1920, 1080, 700, 500, &p), 8);
        assert_eq!(escape_count(2.5, 0.0, p.cr, p.ci, 255), 0);
    }

    #[test]
    fn four_lane_kernel_equals_plain_loop_on_odd_sizes() {
        let params = [
            JuliaParams::default(),
            JuliaParams { cr: -0.7269, ci: 0.1889, max_iter: 255, channel: Channel::Red },
            JuliaParams { cr: 0.285, ci: 0.01, max_iter: 17, channel: Channel::Blue },
        ];
        for p in params.iter() {
            for &(w, h) in &[(1, 1), (3, 17), (17, 3), (33, 21), (64, 64)] {
                let mut pixels = rgba_image(w, h);
                fractalify(&mut pixels, w, h, 4, p);
                for y in 0..h {
                    for x in 0..w {
                        let i = ((y * w + x) * 4) as usize;
                        assert_eq!(pixels[i + p.channel.offset()], reference(w, h, x, y, p), "{}x{} at ({},{})", w, h, x, y);
                    }
                }
            }
        }
    }

    #[test]
    fn other_channels_and_alpha_are_kept() {
        let (w, h) = (9, 5);
        let original = rgba_image(w, h);
        let mut pixels = original.clone();
        fractalify(&mut pixels, w, h, 4, &JuliaParams::default());
        for (i, (a, b)) in original.iter().zip(pixels.iter()).enumerate() {
            if i % 4 != 1 {
                assert_eq!(a, b, "byte {} changed", i);
            }
        }
    }

    #[test]
    fn rgb_buffers_are_handled() {
        let (w, h) = (5, 4);
        let mut pixels = vec![9u8; (w * h * 3) as usize];
        let p = JuliaParams { channel: Channel::Blue, ..JuliaParams::default() };
        fractalify(&mut pixels, w, h, 3, &p);
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 3) as usize;
                assert_eq!(&pixels[i..i + 2], &[9, 9]);
                assert_eq!(pixels[i + 2], reference(w, h, x, y, &p));
            }
        }
    }

    #[test]
    fn max_iter_bounds_the_count() {
        assert_eq!(escape_count(0.0, 0.0, 0.0, 0.0, 1), 1);
        assert_eq!(escape_count(0.0, 0.0, 0.0, 0.0, 255), 255);
    }

    #[test]
    fn constant_parses_to_nearest_f32() {
        assert_eq!(parse_constant("-0.7269,0.1889"), Some((-0.7269f32, 0.1889f32)));
        assert_eq!(parse_constant(" -0.8 , 0.156 "), Some((-0.8f32, 0.156f32)));
        assert_eq!(parse_constant("1"), None);
        assert_eq!(parse_constant("a,b"), None);
        assert_eq!(parse_constant("inf,0"), None);
        assert_eq!(Channel::parse("RED"), Some(Channel::Red));
        assert_eq!(Channel::parse("alpha"), None);
    }
}

//! The pure pixel kernel of fractalify: no files, no WASI, testable natively with `cargo test`.
//!
//! The arithmetic is the contract's, bit for bit: every operation in IEEE-754 binary32, rounded
//! in the order written, never fused (Rust does not contract `a * b + c` into an FMA, and neither
//! WebAssembly SIMD nor wasmtime has a fused operation to contract into).
//!
//! Three ways to run it, all giving identical bytes:
//! - `plain` (feature `plain-kernel`): the contract's loop, one pixel after the other, over every
//!   pixel. The baseline the benchmark compares against.
//! - `scalar`: four pixels in lock-step, so the four dependency chains overlap instead of adding
//!   up, and every image computed once per pair of pixels mirrored through its centre.
//! - `simd128` (built with `+simd128`): the same with two `f32x4` vectors, eight pixels per step.

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

    pub fn name(self) -> &'static str {
        match self {
            Channel::Red => "red",
            Channel::Green => "green",
            Channel::Blue => "blue",
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

/// The iteration count for one starting point `z0 = zr + i*zi`: the contract's loop, verbatim.
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

/// Which kernel this build runs (see the crate's documentation); printed in the module's banner.
pub const KERNEL: &str = if cfg!(feature = "plain-kernel") {
    "plain"
} else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
    "simd128"
} else {
    "scalar"
};

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
    // The real part depends on the column only, the imaginary part on the row only.
    let columns: Vec<f32> = (0..width).map(|x| mapping.re(x)).collect();
    let rows: Vec<f32> = (0..height).map(|y| mapping.im(y)).collect();
    let offset = params.channel.offset();
    let mirrored = mirrored_rows(&columns, &rows);
    let mut counts = vec![0u8; columns.len()];
    for (y, zi0) in rows.iter().enumerate().take(rows.len() - mirrored) {
        row_counts(&columns, *zi0, params, &mut counts);
        let row = &mut pixels[y * row_len..(y + 1) * row_len];
        for (pixel, count) in row.chunks_exact_mut(channels).zip(counts.iter()) {
            pixel[offset] = *count;
        }
        if y < mirrored {
            let opposite = (rows.len() - 1 - y) * row_len;
            let row = &mut pixels[opposite..opposite + row_len];
            for (pixel, count) in row.chunks_exact_mut(channels).zip(counts.iter().rev()) {
                pixel[offset] = *count;
            }
        }
    }
}

/// How many rows at the bottom of the image are the top rows turned by 180 degrees, and so need
/// no computing of their own. Julia sets are symmetric under z -> -z, and exactly so in f32:
/// (-z)^2 rounds to the same z^2 (squares and `(2*zr)*zi` only flip signs twice), so both
/// starting points reach the same z1 and the same count. That holds wherever the mapping puts
/// pixel (W-1-x, H-1-y) at exactly -z0 of pixel (x, y), which is checked, not assumed (f32
/// spacing breaks it for sides of 2^23 pixels and more). The plain baseline computes every pixel.
fn mirrored_rows(columns: &[f32], rows: &[f32]) -> usize {
    let turned = |axis: &[f32]| axis.iter().zip(axis.iter().rev()).all(|(a, b)| *a == -*b);
    if cfg!(feature = "plain-kernel") || !turned(columns) || !turned(rows) {
        0
    } else {
        rows.len() / 2
    }
}

/// The counts of one row: `counts[x]` for the starting point `columns[x] + i*zi0`.
#[cfg(feature = "plain-kernel")]
fn row_counts(columns: &[f32], zi0: f32, p: &JuliaParams, counts: &mut [u8]) {
    for (count, zr0) in counts.iter_mut().zip(columns) {
        *count = escape_count(*zr0, zi0, p.cr, p.ci, p.max_iter);
    }
}

/// Four pixels in lock-step, branch-free inside a step; the tail pixel by pixel.
#[cfg(not(any(feature = "plain-kernel", all(target_arch = "wasm32", target_feature = "simd128"))))]
fn row_counts(columns: &[f32], zi0: f32, p: &JuliaParams, counts: &mut [u8]) {
    const LANES: usize = 4;
    let full = columns.len() / LANES * LANES;
    for (zr0, out) in columns[..full].chunks_exact(LANES).zip(counts[..full].chunks_exact_mut(LANES)) {
        let lanes: [f32; LANES] = zr0.try_into().expect("chunks of LANES");
        out.copy_from_slice(&scalar::escape_counts(lanes, zi0, p));
    }
    for (count, zr0) in counts[full..].iter_mut().zip(&columns[full..]) {
        *count = escape_count(*zr0, zi0, p.cr, p.ci, p.max_iter);
    }
}

#[cfg(not(any(feature = "plain-kernel", all(target_arch = "wasm32", target_feature = "simd128"))))]
mod scalar {
    use super::JuliaParams;

    /// The contract's loop on `L` starting points at once. A point counts the steps it starts
    /// inside the radius, until it first does not (`inside` is sticky): exactly where the plain
    /// loop stops. The z of a point that has left goes on being updated (to infinity or NaN,
    /// which never compare inside again) rather than selected, which keeps the step branch-free,
    /// and lets two steps run between the checks whether any point is still inside.
    #[inline(always)]
    pub fn escape_counts<const L: usize>(zr0: [f32; L], zi0: f32, p: &JuliaParams) -> [u8; L] {
        let (mut zr, mut zi) = (zr0, [zi0; L]);
        let mut inside = [true; L];
        let mut n = [0u8; L];
        let mut step = || {
            let mut any = false;
            for lane in 0..L {
                let (r2, i2) = (zr[lane] * zr[lane], zi[lane] * zi[lane]);
                inside[lane] &= r2 + i2 <= 4.0;
                n[lane] += inside[lane] as u8;
                any |= inside[lane];
                zi[lane] = (2.0 * zr[lane]) * zi[lane] + p.ci;
                zr[lane] = (r2 - i2) + p.cr;
            }
            any
        };
        super::in_pairs_of_steps(p.max_iter, &mut step);
        n
    }
}

/// Eight pixels per step in two `f32x4` vectors (two, so one's latency hides behind the other's
/// work); then groups of four; the tail pixel by pixel.
#[cfg(all(not(feature = "plain-kernel"), target_arch = "wasm32", target_feature = "simd128"))]
fn row_counts(columns: &[f32], zi0: f32, p: &JuliaParams, counts: &mut [u8]) {
    let pairs = columns.len() / 8 * 8;
    for (zr0, out) in columns[..pairs].chunks_exact(8).zip(counts[..pairs].chunks_exact_mut(8)) {
        let [a, b] = simd::escape_counts([simd::load(&zr0[..4]), simd::load(&zr0[4..])], zi0, p);
        simd::store(a, &mut out[..4]);
        simd::store(b, &mut out[4..]);
    }
    let quads = columns.len() / 4 * 4;
    for (zr0, out) in columns[pairs..quads].chunks_exact(4).zip(counts[pairs..quads].chunks_exact_mut(4)) {
        let [a] = simd::escape_counts([simd::load(zr0)], zi0, p);
        simd::store(a, out);
    }
    for (count, zr0) in counts[quads..].iter_mut().zip(&columns[quads..]) {
        *count = escape_count(*zr0, zi0, p.cr, p.ci, p.max_iter);
    }
}

#[cfg(all(not(feature = "plain-kernel"), target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use super::JuliaParams;
    use core::arch::wasm32::*;

    #[inline(always)]
    pub fn load(four: &[f32]) -> v128 {
        f32x4(four[0], four[1], four[2], four[3])
    }

    /// Four counts (i32 lanes, each at most 255) into four bytes.
    #[inline(always)]
    pub fn store(counts: v128, out: &mut [u8]) {
        out[0] = i32x4_extract_lane::<0>(counts) as u8;
        out[1] = i32x4_extract_lane::<1>(counts) as u8;
        out[2] = i32x4_extract_lane::<2>(counts) as u8;
        out[3] = i32x4_extract_lane::<3>(counts) as u8;
    }

    /// The scalar module's lock-step loop, four lanes per vector: `inside` is an all-ones lane
    /// mask, so subtracting it counts a step.
    #[inline(always)]
    pub fn escape_counts<const V: usize>(zr0: [v128; V], zi0: f32, p: &JuliaParams) -> [v128; V] {
        let (cr, ci, two, four) = (f32x4_splat(p.cr), f32x4_splat(p.ci), f32x4_splat(2.0), f32x4_splat(4.0));
        let (mut zr, mut zi) = (zr0, [f32x4_splat(zi0); V]);
        let mut inside = [i32x4_splat(-1); V];
        let mut n = [i32x4_splat(0); V];
        let mut step = || {
            let mut any = i32x4_splat(0);
            for v in 0..V {
                let (r2, i2) = (f32x4_mul(zr[v], zr[v]), f32x4_mul(zi[v], zi[v]));
                inside[v] = v128_and(inside[v], f32x4_le(f32x4_add(r2, i2), four));
                n[v] = i32x4_sub(n[v], inside[v]);
                any = v128_or(any, inside[v]);
                zi[v] = f32x4_add(f32x4_mul(f32x4_mul(two, zr[v]), zi[v]), ci);
                zr[v] = f32x4_add(f32x4_sub(r2, i2), cr);
            }
            v128_any_true(any)
        };
        super::in_pairs_of_steps(p.max_iter, &mut step);
        n
    }
}

/// Runs `step` `max_iter` times, or until it reports that no point is inside any more; the check
/// comes after every second step (a step after all points have left changes no count), which
/// halves the loop's back-edges: hosts that can interrupt a module (Krustlet's wasmtime,
/// runwasi) put a check on each one.
#[cfg(not(feature = "plain-kernel"))]
#[inline(always)]
fn in_pairs_of_steps(max_iter: u8, step: &mut impl FnMut() -> bool) {
    let mut left = max_iter;
    while left >= 2 {
        step();
        left -= 2;
        if !step() {
            return;
        }
    }
    if left == 1 {
        step();
    }
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

    fn assert_equals_reference(w: u32, h: u32, p: &JuliaParams) {
        let mut pixels = rgba_image(w, h);
        fractalify(&mut pixels, w, h, 4, p);
        for y in 0..h {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                assert_eq!(pixels[i + p.channel.offset()], reference(w, h, x, y, p), "{}x{} at ({},{}) for {:?}", w, h, x, y, p);
            }
        }
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
        // Values from the NumPy float32 reference in tests/core/reference.py.
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
            for &(w, h) in &[(1, 1), (3, 17), (17, 3), (33, 21), (64, 64), (2, 2), (9, 1), (1, 9), (30, 31)] {
                assert_equals_reference(w, h, p);
            }
        }
    }

    #[test]
    fn every_kind_of_orbit_gives_the_plain_loop_count() {
        // Interior everywhere (c = 0), period-2 and period-3 cycles, a dust set, constants far
        // outside the radius (points that leave and would come back), zero and negative zero.
        let constants = [(0.0, 0.0), (-1.0, 0.0), (-0.123, 0.745), (0.45, 0.1428), (3.0, 0.0), (-2.5, 2.5), (-0.0, -0.0), (0.0, 1.0)];
        for &(cr, ci) in constants.iter() {
            for &max_iter in &[1u8, 2, 7, 255] {
                let p = JuliaParams { cr, ci, max_iter, channel: Channel::Green };
                for &(w, h) in &[(13, 11), (16, 9), (21, 40)] {
                    assert_equals_reference(w, h, &p);
                }
            }
        }
    }

    #[test]
    fn the_mapping_turns_pixels_exactly_for_ordinary_sizes() {
        for &(w, h) in &[(1, 1), (2, 3), (1920, 1080), (4095, 4097), (65_535, 3), (1 << 20, 7)] {
            let m = PlaneMapping::new(w, h);
            let columns: Vec<f32> = (0..w).map(|x| m.re(x)).collect();
            let rows: Vec<f32> = (0..h).map(|y| m.im(y)).collect();
            let expected = if cfg!(feature = "plain-kernel") { 0 } else { h as usize / 2 };
            assert_eq!(mirrored_rows(&columns, &rows), expected, "{}x{}", w, h);
        }
    }

    #[test]
    fn an_axis_that_is_not_turned_is_computed_whole() {
        assert_eq!(mirrored_rows(&[-1.0, 0.0, 1.0], &[-0.5, 0.25]), 0);
        assert_eq!(mirrored_rows(&[-1.0, 0.5], &[-0.5, 0.5]), 0);
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
    fn channels_parse_by_name() {
        assert_eq!(Channel::parse("RED"), Some(Channel::Red));
        assert_eq!(Channel::parse("alpha"), None);
        assert_eq!(Channel::Blue.name(), "blue");
    }
}

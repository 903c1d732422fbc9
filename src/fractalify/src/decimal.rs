//! Decimal numbers from the command line: the nearest f32 to `--c`'s parts, and `--interval`'s
//! seconds as a `Duration`.
//!
//! Written by hand rather than with `str::parse::<f32>`: core's float parser and formatter (and
//! their tables) are about 30 KB, a tenth of a PNG-and-JPEG module, which must stay under 12% of
//! the seed's size. Exact rational arithmetic on small big integers, so the result is correctly
//! rounded (half to even), as core's is; `cargo test` compares the two on many thousands of inputs.

use std::cmp::Ordering;
use std::time::Duration;

/// A finite decimal: `(-1)^negative * digits * 10^exponent`, `digits` without leading zeros.
#[derive(Debug, PartialEq)]
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i32,
}

/// More significant digits than any f32 rounding decision needs (at most 112): the rest only
/// tells whether something non-zero follows, which a final 1 stands for.
const KEPT_DIGITS: usize = 120;

/// `[+-]digits[.digits][(e|E)[+-]digits]`, at least one digit before the exponent; the forms
/// core's parser takes, less `inf` and `nan`.
fn parse_decimal(text: &str) -> Option<Decimal> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let mut digits = Vec::new();
    let mut exponent: i64 = 0;
    let mut seen_digit = false;
    let mut dropped_non_zero = false;
    let mut in_fraction = false;
    while i < bytes.len() {
        match bytes[i] {
            b'0'..=b'9' => {
                seen_digit = true;
                let d = bytes[i] - b'0';
                if in_fraction {
                    exponent -= 1;
                }
                if digits.is_empty() && d == 0 {
                    // A leading zero carries no digit, only (in a fraction) a place.
                } else if digits.len() < KEPT_DIGITS {
                    digits.push(d);
                } else {
                    dropped_non_zero |= d != 0;
                    exponent += 1; // the digit is dropped but its place is kept
                }
            }
            b'.' if !in_fraction => in_fraction = true,
            b'e' | b'E' => break,
            _ => return None,
        }
        i += 1;
    }
    if !seen_digit {
        return None;
    }
    if i < bytes.len() {
        i += 1; // the 'e'
        let mut sign = 1i64;
        match bytes.get(i) {
            Some(b'-') => {
                sign = -1;
                i += 1;
            }
            Some(b'+') => i += 1,
            _ => {}
        }
        if i == bytes.len() {
            return None;
        }
        let mut written: i64 = 0;
        for b in &bytes[i..] {
            if !b.is_ascii_digit() {
                return None;
            }
            written = (written * 10 + i64::from(b - b'0')).min(1 << 40); // saturate: beyond is 0 or infinite
        }
        exponent += sign * written;
    }
    if dropped_non_zero {
        digits.push(1);
        exponent -= 1;
    }
    while digits.last() == Some(&0) {
        digits.pop();
        exponent += 1;
    }
    let exponent = exponent.clamp(-100_000, 100_000) as i32;
    Some(Decimal { negative, digits, exponent })
}

/// The nearest f32 to the decimal `text` (ties to even), or None when it is not a decimal or its
/// magnitude rounds to infinity.
pub fn parse_f32(text: &str) -> Option<f32> {
    let decimal = parse_decimal(text)?;
    let magnitude = nearest_f32_bits(&decimal.digits, decimal.exponent)?;
    Some(f32::from_bits(magnitude | if decimal.negative { 1 << 31 } else { 0 }))
}

/// `RE,IM` as the nearest f32 pair.
pub fn parse_constant(text: &str) -> Option<(f32, f32)> {
    let (re, im) = text.split_once(',')?;
    Some((parse_f32(re.trim())?, parse_f32(im.trim())?))
}

/// A number of seconds as a Duration, rounded to the nanosecond; None when it is not a decimal,
/// is negative or is over `max_seconds`.
pub fn parse_seconds(text: &str, max_seconds: u64) -> Option<Duration> {
    let decimal = parse_decimal(text)?;
    if decimal.negative && !decimal.digits.is_empty() {
        return None;
    }
    if decimal.digits.is_empty() {
        return Some(Duration::ZERO);
    }
    // Nanoseconds = digits * 10^(exponent + 9), rounded half up; more than 20 places is too many.
    let places = decimal.exponent + 9;
    if decimal.digits.len() as i32 + places > 20 {
        return None;
    }
    // The digits down to the nanosecond, then the next one rounds.
    let cut = decimal.digits.len() as i32 + places.min(0);
    let mut nanos: u128 = 0;
    if cut >= 0 {
        let cut = cut as usize;
        for d in &decimal.digits[..cut] {
            nanos = nanos * 10 + u128::from(*d);
        }
        if places > 0 {
            nanos *= 10u128.pow(places as u32);
        } else if decimal.digits.get(cut).map_or(false, |d| *d >= 5) {
            nanos += 1;
        }
    }
    if nanos > u128::from(max_seconds) * 1_000_000_000 {
        return None;
    }
    Some(Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32))
}

/// The bits of the nearest f32 to `digits * 10^exponent` (non-negative), None if infinite.
fn nearest_f32_bits(digits: &[u8], exponent: i32) -> Option<u32> {
    if digits.is_empty() {
        return Some(0);
    }
    // The value is below 10^magnitude and at least 10^(magnitude - 1).
    let magnitude = digits.len() as i32 + exponent;
    if magnitude > 40 {
        return None; // over 1e39 > f32::MAX
    }
    if magnitude < -46 {
        return Some(0); // under 1e-47, less than half the smallest subnormal (1.4e-45)
    }
    let mut numerator = Big::from_digits(digits);
    let mut denominator = Big::one();
    if exponent >= 0 {
        numerator.mul_pow10(exponent as u32);
    } else {
        denominator.mul_pow10((-exponent) as u32);
    }
    // Find `shift` with value * 2^shift in [2^23, 2^24): a 24-bit significand, rounded below.
    let mut shift = 24 - (numerator.bits() as i32 - denominator.bits() as i32);
    loop {
        let quotient = scaled_quotient(&numerator, &denominator, shift);
        if quotient < 1 << 23 {
            shift += 1;
        } else if quotient >= 1 << 24 {
            shift -= 1;
        } else {
            break;
        }
    }
    // value = m * 2^-shift with m of 24 bits, so the biased exponent is 150 - shift; below 1
    // it is subnormal, whose significand counts units of 2^-149.
    let subnormal = 150 - shift < 1;
    if subnormal {
        shift = 149;
    }
    let (mut n, mut d) = (numerator, denominator);
    if shift >= 0 {
        n.shl(shift as u32);
    } else {
        d.shl((-shift) as u32);
    }
    let mut m = quotient(&n, &d);
    // Round: up when the remainder is over half of d, or exactly half and m is odd.
    n.shl(1);
    let mut twice_m_plus_one_d = d.clone();
    twice_m_plus_one_d.mul_small(2 * m + 1);
    match n.cmp(&twice_m_plus_one_d) {
        Ordering::Greater => m += 1,
        Ordering::Equal if m % 2 == 1 => m += 1,
        _ => {}
    }
    if subnormal {
        return Some(m); // 2^23 here is the smallest normal's bits, as it should be
    }
    let mut biased = 150 - shift;
    if m == 1 << 24 {
        m >>= 1;
        biased += 1;
    }
    if biased >= 255 {
        return None;
    }
    Some(((biased as u32) << 23) | (m & 0x7f_ffff))
}

/// floor(numerator * 2^shift / denominator).
fn scaled_quotient(numerator: &Big, denominator: &Big, shift: i32) -> u32 {
    let (mut n, mut d) = (numerator.clone(), denominator.clone());
    if shift >= 0 {
        n.shl(shift as u32);
    } else {
        d.shl((-shift) as u32);
    }
    quotient(&n, &d)
}

/// floor(n / d), which the callers keep below 2^25, by bisection.
fn quotient(n: &Big, d: &Big) -> u32 {
    let (mut low, mut high) = (0u32, 1u32 << 25); // low * d <= n < high * d
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        let mut product = d.clone();
        product.mul_small(mid);
        if product.cmp(n) == Ordering::Greater {
            high = mid;
        } else {
            low = mid;
        }
    }
    low
}

/// A non-negative big integer, little-endian base-2^32 limbs, no trailing zero limbs.
#[derive(Clone, Debug)]
struct Big(Vec<u32>);

impl Big {
    fn one() -> Big {
        Big(vec![1])
    }

    fn from_digits(digits: &[u8]) -> Big {
        let mut big = Big(Vec::new());
        for d in digits {
            big.mul_small(10);
            big.add_small(u32::from(*d));
        }
        big
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn add_small(&mut self, value: u32) {
        let mut carry = u64::from(value);
        for limb in self.0.iter_mut() {
            if carry == 0 {
                return;
            }
            let sum = u64::from(*limb) + carry;
            *limb = sum as u32;
            carry = sum >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
    }

    fn mul_small(&mut self, factor: u32) {
        let mut carry = 0u64;
        for limb in self.0.iter_mut() {
            let product = u64::from(*limb) * u64::from(factor) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry != 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }

    fn mul_pow10(&mut self, mut power: u32) {
        while power >= 9 {
            self.mul_small(1_000_000_000);
            power -= 9;
        }
        self.mul_small(10u32.pow(power));
    }

    fn shl(&mut self, bits: u32) {
        let (limbs, bits) = ((bits / 32) as usize, bits % 32);
        if bits > 0 {
            let mut carry = 0u32;
            for limb in self.0.iter_mut() {
                let next = *limb >> (32 - bits);
                *limb = (*limb << bits) | carry;
                carry = next;
            }
            if carry != 0 {
                self.0.push(carry);
            }
        }
        self.0.splice(0..0, std::iter::repeat(0).take(limbs));
        self.trim();
    }

    fn bits(&self) -> u32 {
        match self.0.last() {
            Some(top) => (self.0.len() as u32 - 1) * 32 + (32 - top.leading_zeros()),
            None => 0,
        }
    }

    fn cmp(&self, other: &Big) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What core's parser gives, where it is finite: the behaviour to match.
    fn core_f32(text: &str) -> Option<f32> {
        text.parse::<f32>().ok().filter(|v| v.is_finite())
    }

    fn assert_same(text: &str) {
        let ours = parse_f32(text).map(f32::to_bits);
        let core = core_f32(text).map(f32::to_bits);
        assert_eq!(ours, core, "{:?}: ours {:?}, core {:?}", text, ours.map(f32::from_bits), core.map(f32::from_bits));
    }

    /// A small deterministic generator, so the test needs no crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_forms_core_takes() {
        for text in ["0", "-0", "+1", "1.", ".5", "-.5", "1e5", "1E-5", "2.5e+3", "0.000", "00012.50", "1_0", "", ".", "e5", "1e", "1e+", "--1", "1.2.3", "0x10", " 1", "inf", "NaN", "1,5"] {
            assert_same(text);
        }
    }

    #[test]
    fn ties_round_to_even_and_the_edges_of_the_range() {
        for text in [
            "16777216", "16777217", "16777218", "16777219", "33554433", "1.00000005960464477539062500",
            "1.000000059604644775390625000000001", "0.99999997019767761230468750", "3.4028234663852886e38",
            "3.4028235e38", "3.4028235677973366e38", "3.4028235677973367e38", "3.4028236e38", "1e39", "1e-38",
            "1.1754942e-38", "1.17549435e-38", "1.4e-45", "1e-45", "7.006492321624085e-46", "7.0064923216240854e-46",
            "7e-46", "1e-46", "1e-50", "1e-100000000000", "1e100000000000", "-0.4", "0.6", "-0.7269", "0.1889",
            "0.1", "0.2", "0.3", "123456789012345678901234567890", "-3.14159265358979323846264338327950288",
        ] {
            assert_same(text);
        }
    }

    #[test]
    fn long_inputs_keep_their_last_digit() {
        // 2^24 + 1 is a tie; anything after it decides.
        let tie = "16777217";
        assert_same(&format!("{}.{}", tie, "0".repeat(300)));
        assert_same(&format!("{}.{}1", tie, "0".repeat(300)));
        assert_same(&format!("0.{}1e300", "0".repeat(250)));
        assert_same(&format!("{}e-200", "9".repeat(400)));
    }

    #[test]
    fn agrees_with_core_on_every_f32_written_shortest_and_longer() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let value = f32::from_bits(rng.next() as u32);
            if !value.is_finite() {
                continue;
            }
            assert_same(&format!("{}", value));
            assert_same(&format!("{:e}", value));
            let places = (rng.next() % 12) as usize;
            assert_same(&format!("{:.*e}", places, value));
            // The midpoint to the next f32 up, written exactly: the hardest ties.
            let next = f32::from_bits(value.to_bits() + 1);
            if next.is_finite() {
                let midpoint = (f64::from(value) + f64::from(next)) / 2.0;
                assert_same(&format!("{:.60e}", midpoint));
            }
        }
    }

    #[test]
    fn agrees_with_core_on_random_digit_strings() {
        let mut rng = XorShift(42);
        for _ in 0..20_000 {
            let digits: String = (0..1 + rng.next() % 30).map(|_| char::from(b'0' + (rng.next() % 10) as u8)).collect();
            let point = (rng.next() as usize) % (digits.len() + 1);
            let exponent = (rng.next() % 100) as i64 - 60;
            assert_same(&format!("{}.{}e{}", &digits[..point], &digits[point..], exponent));
        }
    }

    #[test]
    fn the_constant_is_a_pair() {
        assert_eq!(parse_constant("-0.7269,0.1889"), Some((-0.7269f32, 0.1889f32)));
        assert_eq!(parse_constant(" -0.8 , 0.156 "), Some((-0.8f32, 0.156f32)));
        assert_eq!(parse_constant("1"), None);
        assert_eq!(parse_constant("a,b"), None);
        assert_eq!(parse_constant("inf,0"), None);
        assert_eq!(parse_constant("1e39,0"), None);
    }

    #[test]
    fn seconds_become_durations() {
        assert_eq!(parse_seconds("5", 86_400), Some(Duration::from_secs(5)));
        assert_eq!(parse_seconds("0.25", 86_400), Some(Duration::from_millis(250)));
        assert_eq!(parse_seconds(".5", 86_400), Some(Duration::from_millis(500)));
        assert_eq!(parse_seconds("1.5e1", 86_400), Some(Duration::from_secs(15)));
        assert_eq!(parse_seconds("0.0000000015", 86_400), Some(Duration::from_nanos(2)));
        assert_eq!(parse_seconds("86400", 86_400), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_seconds("0", 86_400), Some(Duration::ZERO));
        assert_eq!(parse_seconds("86400.000000001", 86_400), None);
        assert_eq!(parse_seconds("1e30", 86_400), None);
        assert_eq!(parse_seconds("-1", 86_400), None);
        assert_eq!(parse_seconds("five", 86_400), None);
    }
}

//! The pure part of the workload: what one input file becomes. Testable natively (`cargo test`).
//! Replace `summarize` with your own idea; `main.rs` handles files, argv and watch mode.

/// FNV-1a, 64 bit: a small, dependency-free fingerprint of the content.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The result written for one input: its size, lines, words and fingerprint.
pub fn summarize(data: &[u8]) -> String {
    let lines = data.iter().filter(|b| **b == b'\n').count() + usize::from(data.last().map_or(false, |b| *b != b'\n'));
    let words = data.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).count();
    format!("bytes: {}\nlines: {}\nwords: {}\nfnv1a64: {:016x}\n", data.len(), lines, words, fnv1a64(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input() {
        assert_eq!(summarize(b""), "bytes: 0\nlines: 0\nwords: 0\nfnv1a64: cbf29ce484222325\n");
    }

    #[test]
    fn counts_lines_and_words() {
        assert_eq!(summarize(b"hello wasm\nworld"), format!("bytes: 16\nlines: 2\nwords: 3\nfnv1a64: {:016x}\n", fnv1a64(b"hello wasm\nworld")));
    }

    /// The examples and what the module must write for them: tests/test_poc.py compares the
    /// module's output in wasmtime with the same files, so the format is stated once, here.
    #[test]
    fn examples_give_their_expected_results() {
        assert_eq!(summarize(include_bytes!("../../../examples/input/hello.txt")),
                   include_str!("../../../examples/expected/hello.txt.txt"));
        assert_eq!(summarize(include_bytes!("../../../examples/input/numbers.csv")),
                   include_str!("../../../examples/expected/numbers.csv.txt"));
    }

    #[test]
    fn fingerprint_is_fnv1a() {
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

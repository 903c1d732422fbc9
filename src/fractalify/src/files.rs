//! The file side of the contract: which inputs exist, where their outputs go, exclusive
//! claims between instances sharing a volume, atomic writes, and how names and I/O errors are
//! shown in the log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::codec::{Format, INPUT_EXTENSIONS};

/// A claim older than this was left by an instance that died, and may be taken over.
pub const STALE_CLAIM_AGE: Duration = Duration::from_secs(10 * 60);

/// The longest file name the common file systems accept, in bytes.
const NAME_MAX: usize = 255;

/// What one walk of the input tree found.
#[derive(Default)]
pub struct Listing {
    /// Relative paths of the inputs, in a stable order.
    pub inputs: Vec<PathBuf>,
    /// Symbolic links met on the way: never followed, so the walk always ends and each image
    /// is processed once per scan whatever links point at it.
    pub links: Vec<PathBuf>,
    /// Directories that could not be listed, with why (the root's own failure is an error).
    pub unlisted: Vec<(PathBuf, io::Error)>,
}

/// Walks `root` recursively. Names starting with `.` (partial uploads, lock files) and files
/// with other extensions are left alone; a directory that cannot be listed (a name in it that
/// is not UTF-8, which wasmtime refuses to list) is reported and the walk goes on elsewhere.
pub fn list_inputs(root: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    walk(root, Path::new(""), &mut listing)?;
    listing.inputs.sort();
    Ok(listing)
}

fn walk(root: &Path, relative: &Path, listing: &mut Listing) -> io::Result<()> {
    let entries = match fs::read_dir(root.join(relative)) {
        Ok(entries) => entries,
        Err(e) if relative.as_os_str().is_empty() => return Err(e),
        // A subdirectory removed while we scan is not worth a word.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            listing.unlisted.push((relative.to_path_buf(), e));
            return Ok(());
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                listing.unlisted.push((relative.to_path_buf(), e));
                return Ok(());
            }
        };
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text.starts_with('.') {
            continue;
        }
        let rel = relative.join(&name);
        // The entry itself, not what a link points at.
        let kind = match entry.file_type().or_else(|_| fs::symlink_metadata(root.join(&rel)).map(|m| m.file_type())) {
            Ok(kind) => kind,
            Err(_) => continue,
        };
        if kind.is_symlink() {
            listing.links.push(rel);
        } else if kind.is_dir() {
            walk(root, &rel, listing)?;
        } else if kind.is_file() && has_input_extension(&name_text) {
            listing.inputs.push(rel);
        }
    }
    Ok(())
}

fn has_input_extension(name: &str) -> bool {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => INPUT_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()),
        _ => false,
    }
}

/// The output path for an input of `format`: the same relative path, except WebP, written as
/// PNG with `.png` added.
pub fn output_relative(input: &Path, format: Format) -> PathBuf {
    if format == Format::WebP {
        let mut name = input.as_os_str().to_owned();
        name.push(".png");
        PathBuf::from(name)
    } else {
        input.to_path_buf()
    }
}

/// A hidden sibling of `path` named `.<file name><suffix>`; when that would be longer than a
/// file name may be, `.<the name's first bytes>~<a hash of the whole name><suffix>`, so any
/// name the file system accepts as an input can be claimed and written.
fn hidden_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if 1 + name.len() + suffix.len() <= NAME_MAX {
        return path.with_file_name(format!(".{}{}", name, suffix));
    }
    let mut keep = 100;
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    path.with_file_name(format!(".{}~{:016x}{}", &name[..keep], fnv1a(name.as_bytes()), suffix))
}

/// FNV-1a, 64 bits: stable across builds (std's hashers are not promised to be), so every
/// instance on a volume shortens a name the same way.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}

pub fn claim_path(output: &Path) -> PathBuf {
    hidden_sibling(output, ".claim")
}

pub fn temp_path(output: &Path, instance: &str) -> PathBuf {
    hidden_sibling(output, &format!(".{}.tmp", instance))
}

/// An exclusive claim on one output, released (deleted) when dropped.
pub struct Claim {
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Claims `output` for `instance` with an exclusive create. `Ok(None)`: another live instance
/// holds it. A claim older than `STALE_CLAIM_AGE` is taken over, and its owner's temporary
/// file removed.
pub fn try_claim(output: &Path, instance: &str) -> io::Result<Option<Claim>> {
    let path = claim_path(output);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match create_claim(&path, instance) {
        Ok(claim) => return Ok(Some(claim)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if !is_stale(&path) {
        return Ok(None);
    }
    // Move the stale claim aside under a name of our own: of several instances taking over at
    // once, only one rename succeeds; the others see NotFound and leave the image alone.
    let tomb = hidden_sibling(output, &format!(".{}.stale", instance));
    if fs::rename(&path, &tomb).is_err() {
        return Ok(None);
    }
    if !is_stale(&tomb) {
        // Lost a race with an instance that had just taken it over: give its claim back.
        let _ = fs::rename(&tomb, &path);
        return Ok(None);
    }
    if let Some(dead) = claim_owner(&tomb) {
        let _ = fs::remove_file(temp_path(output, &dead));
    }
    let _ = fs::remove_file(&tomb);
    match create_claim(&path, instance) {
        Ok(claim) => Ok(Some(claim)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

fn create_claim(path: &Path, instance: &str) -> io::Result<Claim> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let claim = Claim { path: path.to_path_buf() };
    let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    writeln!(file, "{} {}", instance, since)?;
    Ok(claim)
}

/// The instance a claim names (its first word).
fn claim_owner(claim: &Path) -> Option<String> {
    fs::read_to_string(claim).ok()?.split_whitespace().next().map(str::to_string)
}

fn is_stale(path: &Path) -> bool {
    let modified = match fs::metadata(path).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(_) => return false,
    };
    match SystemTime::now().duration_since(modified) {
        Ok(age) => age > STALE_CLAIM_AGE,
        Err(_) => false,
    }
}

/// Removes, under `output_dir`, the claims, temporary files and set-aside claims an earlier run
/// of `instance` left (the node restarted it after a crash): one instance ID never runs twice
/// at once, so they are its own and the images they hold need not wait ten minutes.
/// Returns how many were removed.
pub fn take_back_leftovers(output_dir: &Path, instance: &str) -> usize {
    let own_temp = format!(".{}.tmp", instance);
    let own_tomb = format!(".{}.stale", instance);
    let mut removed = 0;
    let mut pending = vec![output_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() && name.starts_with('.') => {
                    let ours = name.ends_with(&own_temp)
                        || name.ends_with(&own_tomb)
                        || (name.ends_with(".claim") && claim_owner(&path).as_deref() == Some(instance));
                    if ours && fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
                _ => {}
            }
        }
    }
    removed
}

/// Reads and writes go through the runtime in pieces this large: wasmtime copies each call's
/// whole buffer on the host side, so one call for a 100 MB image would cost 100 MB more.
const IO_PIECE: usize = 4 << 20;

/// Reads a whole file in pieces of `IO_PIECE` into a buffer allocated once.
pub fn read_whole(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut bytes = vec![0u8; file.metadata()?.len() as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        let end = (filled + IO_PIECE).min(bytes.len());
        match file.read(&mut bytes[filled..end])? {
            0 => break, // shorter than it was: its content is checked next
            n => filled += n,
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// Writes `bytes` so that `output` appears only complete: a hidden temporary name in the same
/// directory, then a rename.
pub fn write_atomically(output: &Path, bytes: &[u8], instance: &str) -> io::Result<()> {
    let temp = temp_path(output, instance);
    let result = File::create(&temp).and_then(|mut f| {
        for piece in bytes.chunks(IO_PIECE) {
            f.write_all(piece)?;
        }
        f.sync_all()
    });
    let result = result.and_then(|_| fs::rename(&temp, output));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Whether `dir` (a preopened directory) was removed while we ran: nothing can be created in it.
/// Then nothing can ever be written through it again, however the host recreates the path.
pub fn directory_removed(dir: &Path, instance: &str) -> bool {
    let probe = dir.join(format!(".fractalify-probe.{}.tmp", instance));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            false
        }
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// What identifies an unchanged file between scans: its size and modification time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

impl Fingerprint {
    pub fn len(&self) -> u64 {
        self.len
    }
}

pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = fs::metadata(path).ok()?;
    Some(Fingerprint { len: m.len(), modified: m.modified().ok() })
}

/// A name as it may appear in a log line: control characters, line and paragraph separators
/// and backslashes escaped, so no file name can start a line or forge a `wrote` line.
/// (A name that is not UTF-8 never reaches the module: wasmtime refuses to list it.)
pub fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || (0x7f..=0x9f).contains(&(c as u32)) => out.push_str(&format!("\\x{:02x}", c as u32)),
            '\u{2028}' | '\u{2029}' | '\u{feff}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The cause of an I/O failure in words (`no space left on device`), without the errno number.
pub fn cause(error: &io::Error) -> String {
    // WASI's errno values under wasm32-wasi, Linux's natively (for `cargo test`).
    #[cfg(target_os = "wasi")]
    const CODES: &[(i32, &str)] = &[
        (51, "no space left on device"), (69, "read-only file system"), (2, "permission denied"),
        // wasmtime reports a read-only mount as EIO.
        (63, "operation not permitted"), (29, "input/output error (a read-only or failing file system)"), (19, "disk quota exceeded"),
        (44, "no such file or directory"), (54, "not a directory"), (37, "file name too long"),
        (33, "too many open files"), (41, "too many open files in system"), (22, "file too large"),
        (76, "not allowed by the sandbox"),
    ];
    #[cfg(not(target_os = "wasi"))]
    const CODES: &[(i32, &str)] = &[
        (28, "no space left on device"), (30, "read-only file system"), (13, "permission denied"),
        (1, "operation not permitted"), (5, "input/output error"), (122, "disk quota exceeded"),
        (2, "no such file or directory"), (20, "not a directory"), (36, "file name too long"),
        (24, "too many open files"), (23, "too many open files in system"), (27, "file too large"),
    ];
    if let Some(code) = error.raw_os_error() {
        if let Some((_, words)) = CODES.iter().find(|(c, _)| *c == code) {
            return words.to_string();
        }
    }
    let text = error.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_ascii_lowercase(),
        None => text,
    }
}

/// Whether an I/O failure is the name's own fault (it will never succeed), not the surroundings'.
pub fn is_name_fault(error: &io::Error) -> bool {
    cause(error) == "file name too long"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_extensions_any_case_and_not_hidden() {
        assert!(has_input_extension("a.PNG"));
        assert!(has_input_extension("a.b.JpEg"));
        assert!(!has_input_extension("README"));
        assert!(!has_input_extension("sums.sha256"));
        assert!(!has_input_extension(".png"));
    }

    #[test]
    fn webp_output_gets_png_added() {
        assert_eq!(output_relative(Path::new("a/cat.webp"), Format::WebP), PathBuf::from("a/cat.webp.png"));
        assert_eq!(output_relative(Path::new("a/cat.JPG"), Format::Jpeg), PathBuf::from("a/cat.JPG"));
        assert_eq!(claim_path(Path::new("/o/a/cat.png")), PathBuf::from("/o/a/.cat.png.claim"));
        assert_eq!(temp_path(Path::new("/o/cat.png"), "x1"), PathBuf::from("/o/.cat.png.x1.tmp"));
    }

    #[test]
    fn long_names_get_short_hidden_siblings_that_stay_distinct() {
        let long = format!("/o/{}.png", "é".repeat(124));
        let other = format!("/o/{}x.png", "é".repeat(124));
        let claim = claim_path(Path::new(&long));
        let name = claim.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with('.') && name.ends_with(".claim") && name.len() <= NAME_MAX, "{}", name);
        assert_ne!(claim, claim_path(Path::new(&other)));
        let temp = temp_path(Path::new(&long), &"i".repeat(64));
        assert!(temp.file_name().unwrap().len() <= NAME_MAX);
        assert!(temp.to_str().unwrap().ends_with(&format!(".{}.tmp", "i".repeat(64))));
    }

    #[test]
    fn names_in_log_lines_cannot_start_a_line() {
        assert_eq!(shown(Path::new("a\nwrote b.png (1 bytes, 1 ms)")), "a\\x0awrote b.png (1 bytes, 1 ms)");
        assert_eq!(shown(Path::new("tab\there\r\u{2028}\u{85}\\")), "tab\\x09here\\x0d\\u{2028}\\x85\\\\");
        assert_eq!(shown(Path::new("ünïcødé/日本.png")), "ünïcødé/日本.png");
    }

    #[test]
    fn causes_are_words_without_errno_numbers() {
        assert_eq!(cause(&io::Error::from_raw_os_error(28)), "no space left on device");
        assert_eq!(cause(&io::Error::from_raw_os_error(30)), "read-only file system");
        assert!(is_name_fault(&io::Error::from_raw_os_error(36)));
        assert!(!cause(&io::Error::new(io::ErrorKind::Other, "odd")).contains("os error"));
    }
}

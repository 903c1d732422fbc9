//! The file side of the contract: which inputs exist, where their outputs go, exclusive
//! claims between instances sharing a volume, and atomic writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::codec::{Format, INPUT_EXTENSIONS};

/// A claim older than this was left by an instance that died, and may be taken over.
pub const STALE_CLAIM_AGE: Duration = Duration::from_secs(10 * 60);

/// Relative paths of every input under `root`, recursively, in a stable order. Names starting
/// with `.` (partial uploads, lock files) and files with other extensions are left alone.
pub fn list_inputs(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    walk(root, Path::new(""), &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(root: &Path, relative: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match fs::read_dir(root.join(relative)) {
        Ok(entries) => entries,
        // A subdirectory removed while we scan is not an error; the root is checked at start.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !relative.as_os_str().is_empty() => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name_text = name.to_string_lossy();
        if name_text.starts_with('.') {
            continue;
        }
        let rel = relative.join(&name);
        // Follow symbolic links to see what they point at; a dangling one is skipped.
        let metadata = match fs::metadata(root.join(&rel)) {
            Ok(m) => m,
            Err(_) => continue,
        };
        if metadata.is_dir() {
            walk(root, &rel, found)?;
        } else if metadata.is_file() && has_input_extension(&name_text) {
            found.push(rel);
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

/// A hidden sibling of `path` named `.<file name><suffix>`.
fn hidden_sibling(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{}{}", name, suffix))
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
    if let Ok(owner) = fs::read_to_string(&tomb) {
        if let Some(dead) = owner.split_whitespace().next() {
            let _ = fs::remove_file(temp_path(output, dead));
        }
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

/// Writes `bytes` so that `output` appears only complete: a hidden temporary name in the same
/// directory, then a rename.
pub fn write_atomically(output: &Path, bytes: &[u8], instance: &str) -> io::Result<()> {
    let temp = temp_path(output, instance);
    let result = File::create(&temp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let result = result.and_then(|_| fs::rename(&temp, output));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// What identifies an unchanged file between scans: its size and modification time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
}

pub fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = fs::metadata(path).ok()?;
    Some(Fingerprint { len: m.len(), modified: m.modified().ok() })
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
}
